"""The dataset registry: one module per dataset, each defining its :class:`DatasetSpec`.

Adding a dataset = one file here with a spec (and its loader), plus its line in ``DATASETS``.
Importing this package imports no torch.
"""
from __future__ import annotations

import os

from ...errors import DataError
from . import cifar, digits, stl10, svhn
from .base import SPLITS, DatasetSpec, ImageData

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (*cifar.SPECS, *svhn.SPECS, stl10.SPEC, digits.SPEC)}

__all__ = ["DATASETS", "SPLITS", "DatasetSpec", "ImageData", "get_spec", "load_dataset"]


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; an unknown name is one :class:`DataError` line."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}") from None


def load_dataset(name: str, root: str | os.PathLike, split: str, download: bool = True) -> ImageData:
    """Split ``split`` (train, test or unlabeled) of dataset ``name`` under ``root``."""
    return get_spec(name).load(os.fspath(root), split, download)
