"""``python -m fixmatch_ray.bench {aug,ray,gpu}`` (the CLI is :func:`fixmatch_ray.bench.main`)."""
import sys

from . import main

sys.exit(main())
