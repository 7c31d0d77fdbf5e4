"""The validation split: ``val_size`` labeled training images held out of training altogether.

Drawn by the official split rule (:func:`.splits.split_by_distribution`: class counts follow the
class distribution, so class-balanced on balanced classes) with the run's split seed, before the
labeled split; the labeled split is then drawn from the rest, by the same rule and seed, and the
held-out images are in neither the labeled nor the unlabeled set. numpy only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .splits import split_by_distribution


def hold_out(targets: np.ndarray, val_size: int, seed: int, classes: Sequence[str] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, indices left for training) into ``targets``; a ``val_size`` that
    takes every image of some class is one :class:`ConfigError` line naming the class."""
    n = len(targets)
    if val_size >= n:
        raise ConfigError(f"val_size: {val_size} holds out every one of the {n} labeled training images; "
                          f"expected 1..{n - 1}")
    val = split_by_distribution(targets, val_size, seed)
    keep = np.setdiff1d(np.arange(n), val)
    left = np.bincount(targets[keep], minlength=int(targets.max()) + 1)
    if (left == 0).any():
        c = int(np.argmin(left))
        name = classes[c] if classes else str(c)
        raise ConfigError(f"val_size: {val_size} takes every training image of class {name!r} "
                          f"({int((targets == c).sum())} image(s)) into validation, leaving it no labeled "
                          "image; lower val_size or add images of that class")
    return val, keep
