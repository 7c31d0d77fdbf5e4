"""Launch code: what starts, guards and stops sweeps and runs (the only layer that may import Ray)."""
