"""The labeled split: which training images keep their labels (numpy only, pure functions).

A split is a pure function of (targets, num_labeled, seed) with a local RNG, so every process,
every DDP rank and every restart draws the same one: the official ``scripts/create_split.py``
rule (:func:`split_by_distribution`) for every dataset except STL-10, which has its own folds.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


# -- the labeled split --------------------------------------------------------------------------
def split_by_distribution(targets: Sequence[int] | np.ndarray, num_labeled: int, seed: int) -> np.ndarray:
    """Indices of ``num_labeled`` labeled images whose class counts follow the class distribution.

    The one rule of the official ``scripts/create_split.py`` (lines 72-93), for every dataset but
    STL-10 (its folds), exactly: with ``s_c`` = images of class ``c`` / images of the largest class
    and ``n_c`` the labels given so far, each label goes to ``argmax_c (s_c - n_c / max(max_c n_c, 1))``
    (lowest class on ties) and is the next image of that class. So every class gets one label in
    the first ``C``, and after ``m`` labels of the largest class, class ``c`` has ``ceil(s_c·m)``;
    a cut inside such a round goes to the classes furthest below their share first. On exactly
    balanced classes (CIFAR) that is round-robin, class 0 first: ``num_labeled / C`` each. A class
    with no image left is never chosen while another has one, so any count up to every image works.
    Classes must be ``0..C-1``; their order matters (ties, and the order classes draw from the RNG).

    ``seed`` 0 takes the first images of each class in file order (the official "0 for no
    shuffling"); any other seed shuffles each class's positions, class 0 first, with a local legacy
    ``RandomState(seed)``: the stream of the official ``np.random.seed(seed)`` + ``np.random.shuffle``,
    so the same files in the same order give the very images of the official
    ``<dataset>.<seed>@<num_labeled>`` (its ``-<valid>`` suffix does not change them: the validation
    images come off the unlabeled set, ``libml/data.py:277-278``).
    """
    targets = np.asarray(targets)
    if num_labeled <= 0:
        raise ValueError(f"num_labeled must be positive, got {num_labeled}")
    if targets.ndim != 1 or len(targets) == 0 or targets.min() < 0:
        raise ValueError("targets must be a non-empty list of class ids 0..C-1")
    counts = np.bincount(targets)
    if (counts == 0).any():
        raise ValueError(f"classes must be 0..{len(counts) - 1}; class {int(np.argmin(counts))} has no image")
    if num_labeled > len(targets):
        raise ValueError(f"num_labeled {num_labeled} is more than the {len(targets)} training images")
    members = [np.flatnonzero(targets == c) for c in range(len(counts))]
    if seed:
        rng = np.random.RandomState(seed)  # legacy MT19937: the official stream, but local
        for idx in members:
            rng.shuffle(idx)
    stats = counts / counts.max()  # float64, as the official train_stats
    npos = np.zeros(len(counts), dtype=np.int64)
    picked = np.empty(num_labeled, dtype=np.int64)
    for i in range(num_labeled):
        c = int(np.argmax(stats - npos / max(npos.max(), 1)))
        picked[i] = members[c][npos[c]]
        npos[c] += 1
    return np.sort(picked)


def official_split(root: str, targets: np.ndarray, num_labeled: int, seed: int) -> np.ndarray:
    """The registry's default split (CIFAR-10/100, digits): :func:`split_by_distribution` over the
    training images in file order, classes as numbered; ``root`` unused."""
    return split_by_distribution(targets, num_labeled, seed)


def check_distribution_labels(name: str, num_train: int, n: int) -> str | None:
    """Why ``n`` labels cannot be spread by :func:`split_by_distribution` over ``num_train``
    images, or None: any count from 1 to every training image can."""
    if n <= 0:
        return f"must be a positive count of labeled images, got {n}"
    if n > num_train:
        return (f"{name} spreads labels by its class distribution (the official create_split.py rule): "
                f"num_labeled must be 1..{num_train} (its training images), got {n}")
    return None


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

