"""Everything that starts, guards and stops sweeps and runs: the Train worker, cluster helpers,
the experiment lease, the sweep driver (the only layer that imports Ray)."""
