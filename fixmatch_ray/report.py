"""``python -m fixmatch_ray.report <experiment>``: the results table again (see :mod:`.results.report`)."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    from .results.report import main as report_main

    return report_main(argv)


if __name__ == "__main__":
    sys.exit(main())
