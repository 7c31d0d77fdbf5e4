"""The run-config keys of the data a run trains on: ``num_labeled: all``, ``image_size``, ``val_size``."""
from __future__ import annotations

from typing import Any

from .strict import require

ALL_LABELS = "all"  # num_labeled: every training image (after any validation hold-out)


def labels_arg(text: str) -> int | str:
    """``--num-labeled``: a count, or ``all``."""
    return text if text == ALL_LABELS else int(text)


def check_data_keys(c: Any, spec: Any) -> None:
    """Each of these keys of run config ``c`` fits the dataset's ``spec``, else one ConfigError line."""
    require(c.num_labeled == ALL_LABELS or not isinstance(c.num_labeled, str),
            f"num_labeled: expected a count or {ALL_LABELS!r}, got {c.num_labeled!r}")
    problem = None if c.num_labeled == ALL_LABELS else spec.check_num_labeled(c.num_labeled)
    require(problem is None, f"num_labeled: {problem}")
    require(c.image_size is None or c.image_size > 0, f"image_size: must be a positive integer, got {c.image_size}")
    require(c.image_size is None or spec.from_files is not None,
            f"image_size: only for a dataset made from its files (folder), not {c.dataset}")
    require(c.val_size is None or c.val_size > 0, f"val_size: must be a positive count of images, got {c.val_size}")
