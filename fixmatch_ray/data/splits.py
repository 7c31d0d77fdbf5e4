"""The labeled split: which training images keep their labels (numpy only, pure functions).

A split is a pure function of (targets, num_labeled, seed) with a local RNG, so every process,
every DDP rank and every restart draws the same one.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


# -- the labeled split --------------------------------------------------------------------------
def split_labeled(targets: Sequence[int] | np.ndarray, num_labeled: int, seed: int) -> np.ndarray:
    """Indices of a class-balanced labeled subset: ``num_labeled / C`` images of each class.

    A pure function of its inputs (local RNG), so every process draws the same split. The
    unlabeled set is the whole training set, these images included.
    """
    targets = np.asarray(targets)
    classes = np.unique(targets)
    if num_labeled <= 0 or num_labeled % len(classes):
        raise ValueError(f"num_labeled {num_labeled} must be a positive multiple of {len(classes)} classes")
    per_class = num_labeled // len(classes)
    rng = np.random.default_rng([seed, 0x5EED])
    picked = []
    for c in classes:
        idx = np.flatnonzero(targets == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} images, fewer than the {per_class} labels asked per class")
        picked.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(picked))


def expand_labeled(labeled_idx: np.ndarray, batch_size: int, eval_step: int, expand: bool) -> np.ndarray:
    """The reference's ``--expand-labels``: repeat the labeled indices to fill one epoch.

    With ``expand`` (or fewer labels than a batch, where the reference expands too) the list is
    repeated ``ceil(B·eval_step / n)`` times, so one pass over it lasts ``eval_step`` steps.
    Order does not matter: the sampler permutes it.
    """
    n = len(labeled_idx)
    if expand or n < batch_size:
        return np.tile(labeled_idx, math.ceil(batch_size * eval_step / n))
    return labeled_idx

