"""Run-config keys whose default is the selected algorithm's (left unset in the config)."""
from __future__ import annotations

from typing import Any

from ..data.datasets import DATASETS
from .strict import require

DEFAULT_NUM_LABELED = 4000


def fill_algorithm_defaults(c: Any, cls: Any) -> None:
    """``mu`` and ``num_labeled`` of run config ``c`` left unset take algorithm ``cls``'s values
    (its official unlabeled ratio; every training image for an algorithm that trains on all labels)."""
    if c.mu is None:
        object.__setattr__(c, "mu", cls.mu)
    spec = DATASETS.get(c.dataset)
    if not cls.all_labels or spec is None:
        if c.num_labeled is None:
            object.__setattr__(c, "num_labeled", DEFAULT_NUM_LABELED)
        return
    require(c.num_labeled in (None, spec.num_train),
            f"num_labeled: algorithm {c.algorithm} trains on every training label, {spec.num_train} on "
            f"{c.dataset}; got {c.num_labeled} (leave num_labeled unset)")
    object.__setattr__(c, "num_labeled", spec.num_train)
