"""Everything that talks to Ray: the Train worker, cluster helpers, the sweep driver."""
