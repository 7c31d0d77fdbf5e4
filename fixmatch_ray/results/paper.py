"""The paper's numbers (Sohn et al., 2020, Table 2: error %, mean ± std over 5 folds), keyed by
(algorithm, augmentation policy, dataset, labels): no paper number where the paper has none.

Source: Table 2 of "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence"
(arXiv 2001.07685, NeurIPS 2020), rows "FixMatch (RA)" and "FixMatch (CTA)".
The paper's own text could not be opened from here; every cell was checked against secondary
sources that quote the table (public summaries of the paper giving all 20 cells, and the STL-10
accuracies 94.83 % CTA / 92.02 % RA on Papers with Code, i.e. 5.17 / 7.98 % error): all agree.
``svhn`` is the official ``svhn_noextra`` (what Table 2 used); ``svhn_extra`` and the barely
supervised CIFAR-10 runs (10 labels: the paper shows their spread in a figure, no table cell) have
no paper number.
"""
from __future__ import annotations

from typing import Any

from ..config.run import defaults_of

PAPER_ERROR: dict[tuple[str, str, str, int], tuple[float, float]] = {
    ("fixmatch", "randaugment", "cifar10", 40): (13.81, 3.37),
    ("fixmatch", "randaugment", "cifar10", 250): (5.07, 0.65),
    ("fixmatch", "randaugment", "cifar10", 4000): (4.26, 0.05),
    ("fixmatch", "randaugment", "cifar100", 400): (48.85, 1.75),
    ("fixmatch", "randaugment", "cifar100", 2500): (28.29, 0.11),
    ("fixmatch", "randaugment", "cifar100", 10000): (22.60, 0.12),
    ("fixmatch", "randaugment", "svhn", 40): (3.96, 2.17),
    ("fixmatch", "randaugment", "svhn", 250): (2.48, 0.38),
    ("fixmatch", "randaugment", "svhn", 1000): (2.28, 0.11),
    ("fixmatch", "randaugment", "stl10", 1000): (7.98, 1.50),
    ("fixmatch", "ctaugment", "cifar10", 40): (11.39, 3.35),
    ("fixmatch", "ctaugment", "cifar10", 250): (5.07, 0.33),
    ("fixmatch", "ctaugment", "cifar10", 4000): (4.31, 0.15),
    ("fixmatch", "ctaugment", "cifar100", 400): (49.95, 3.01),
    ("fixmatch", "ctaugment", "cifar100", 2500): (28.64, 0.24),
    ("fixmatch", "ctaugment", "cifar100", 10000): (23.18, 0.11),
    ("fixmatch", "ctaugment", "svhn", 40): (7.65, 7.65),
    ("fixmatch", "ctaugment", "svhn", 250): (2.64, 0.64),
    ("fixmatch", "ctaugment", "svhn", 1000): (2.36, 0.19),
    ("fixmatch", "ctaugment", "stl10", 1000): (5.17, 0.63),
}
# the axes that pick a cell; any other axis must keep FixMatch's default (the paper's), or the
# setting (the supervised baseline's lambda_u = 0, an ablation's threshold...) has no paper number
CELL_KEYS = ("algorithm", "policy", "dataset", "num_labeled")


def paper_reference(setting: dict[str, Any], run: dict[str, Any]) -> tuple[float, float] | None:
    """The paper's (error, std) for a trial's setting and run config, or None."""
    key = (run.get("algorithm", "fixmatch"), run.get("policy", "randaugment"), run.get("dataset"),
           run.get("num_labeled"))
    ref = PAPER_ERROR.get(key)
    defaults = defaults_of(key[0])
    others = {k: v for k, v in setting.items() if k not in CELL_KEYS}
    if ref is None or any(defaults.get(k) != v for k, v in others.items()):
        return None
    return ref
