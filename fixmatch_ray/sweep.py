"""``python -m fixmatch_ray.sweep sweeps/paper.yaml``: the sweep service (see :mod:`.launch.sweep`)."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    from .launch.sweep import main as sweep_main

    return sweep_main(argv)


if __name__ == "__main__":
    sys.exit(main())
