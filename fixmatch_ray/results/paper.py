"""The paper's numbers (Sohn et al., 2020, Table 2: error %, mean ± std over 5 folds), keyed by
(algorithm, augmentation policy, dataset, labels): no paper number where the paper has none."""
from __future__ import annotations

from typing import Any

from ..config import RunConfig

PAPER_ERROR: dict[tuple[str, str, str, int], tuple[float, float]] = {
    ("fixmatch", "randaugment", "cifar10", 40): (13.81, 3.37),
    ("fixmatch", "randaugment", "cifar10", 250): (5.07, 0.65),
    ("fixmatch", "randaugment", "cifar10", 4000): (4.26, 0.05),
    ("fixmatch", "randaugment", "cifar100", 400): (48.85, 1.75),
    ("fixmatch", "randaugment", "cifar100", 2500): (28.29, 0.11),
    ("fixmatch", "randaugment", "cifar100", 10000): (22.60, 0.12),
}
# the axes that pick a cell; any other axis must keep FixMatch's default (the paper's), or the
# setting (the supervised baseline's lambda_u = 0, an ablation's threshold...) has no paper number
CELL_KEYS = ("algorithm", "policy", "dataset", "num_labeled")


def paper_reference(setting: dict[str, Any], run: dict[str, Any]) -> tuple[float, float] | None:
    """The paper's (error, std) for a trial's setting and run config, or None."""
    key = (run.get("algorithm", "fixmatch"), run.get("policy", "randaugment"), run.get("dataset"),
           run.get("num_labeled"))
    ref = PAPER_ERROR.get(key)
    defaults = RunConfig()
    others = {k: v for k, v in setting.items() if k not in CELL_KEYS}
    if ref is None or any(getattr(defaults, k, None) != v for k, v in others.items()):
        return None
    return ref
