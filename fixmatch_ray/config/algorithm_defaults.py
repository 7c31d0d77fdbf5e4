"""Run-config keys whose default is the selected algorithm's (left unset in the config)."""
from __future__ import annotations

from typing import Any

from ..data.datasets import DATASETS
from .datakeys import ALL_LABELS
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
    # a count where the dataset's size is known before its files are read and nothing is held out
    known = spec.from_files is None and c.val_size is None
    require(c.num_labeled in (None, ALL_LABELS) or (known and c.num_labeled == spec.num_train),
            f"num_labeled: algorithm {c.algorithm} trains on every training label"
            + (f", {spec.num_train} on {c.dataset}" if known else "")
            + f"; got {c.num_labeled} (leave num_labeled unset, or {ALL_LABELS!r})")
    object.__setattr__(c, "num_labeled", spec.num_train if known else ALL_LABELS)
