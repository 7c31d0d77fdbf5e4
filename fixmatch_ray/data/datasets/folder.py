"""``dataset: folder``: a user's own images (class folders or CSV, :mod:`.layout`) as a dataset.

Its spec is made from its files (:func:`folder_spec`): the classes from the training set's class
names, the image size from the images (or ``image_size``), the per-channel mean and std from the
training images (``train`` and ``unlabeled``: every image the model trains on, none of
validation or test), all read from the decoded cache (:mod:`.imagecache`). The labeled split is
the official rule over ``train`` in load order, as for the paper datasets; the unlabeled set is
``train`` followed by ``unlabeled`` (the STL-10 arrangement). Weak augmentation flips
horizontally, as on CIFAR.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from ...errors import DataError
from .base import DatasetSpec, ImageData
from .imagecache import cached, read_arrays, read_meta
from .layout import PARTS, read_layout

NAME = "folder"
UNLABELED_SPLIT = "train+unlabeled"
# the network shape when the config gives none: the paper's CIFAR-10 network
ARCH_DEFAULTS = {"wideresnet": {"depth": 28, "width": 2}, "resnext": {"depth": 29, "width": 4, "cardinality": 4}}


@functools.lru_cache(maxsize=16)
def _entry(where: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    images, targets = read_arrays(where)
    return read_meta(where), images, targets


def load_part(where: str, split: str) -> ImageData:
    """Split ``split`` (a part, or ``train+unlabeled``) of the cache entry ``where``."""
    meta, images, targets = _entry(where)
    counts = [meta["counts"][p] for p in PARTS]
    starts = dict(zip(PARTS, np.cumsum([0, *counts[:-1]]).tolist()))
    parts = ("train", "unlabeled") if split == UNLABELED_SPLIT else (split,)
    if any(p not in PARTS for p in parts):
        raise DataError(f"dataset folder has no {split!r} split; expected one of {', '.join(PARTS)}")
    lo, hi = starts[parts[0]], starts[parts[-1]] + meta["counts"][parts[-1]]
    return ImageData(images[lo:hi], targets[lo:hi])


def _load(where: str, root: str, split: str, download: bool) -> ImageData:
    return load_part(where, split)


def folder_spec(root: str, image_size: int | None = None) -> DatasetSpec:
    """The spec of the dataset under ``root`` (decoded into the cache first when it is not there)."""
    where = cached(read_layout(root), image_size)
    meta = _entry(where)[0]
    return dataclasses.replace(
        SPEC, num_classes=len(meta["classes"]), image_size=meta["image_size"], mean=tuple(meta["mean"]),
        std=tuple(meta["std"]), num_train=meta["counts"]["train"], classes=tuple(meta["classes"]),
        load=functools.partial(_load, where), check_labels=None,
        from_files=None, facts={"cache": where, "counts": meta["counts"]})


def _placeholder_load(root: str, split: str, download: bool) -> ImageData:
    return folder_spec(root).load(root, split, download)


def _check_labels(n: int) -> str | None:
    return None if n > 0 else f"must be a positive count of labeled images (or all), got {n}"


# The registry's entry: what is known before the files are read; a run uses folder_spec's.
SPEC = DatasetSpec(NAME, 0, 0, (0.0,) * 3, (1.0,) * 3, True, 0, _placeholder_load, arch_defaults=ARCH_DEFAULTS,
                   unlabeled_split=UNLABELED_SPLIT, check_labels=_check_labels, from_files=folder_spec)
