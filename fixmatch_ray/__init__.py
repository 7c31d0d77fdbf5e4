"""fixmatch_ray: the FixMatch paper grid as one command on a Ray cluster."""

__version__ = "0.1.0"
