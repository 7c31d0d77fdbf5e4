"""The dataset registry: one module per dataset, each defining its :class:`DatasetSpec`.

Adding a dataset = one file here with a spec (and its loader), plus its line below; another
package adds its own through the ``fixmatch_ray.datasets`` entry-point group (the entry point
names a ``DatasetSpec``). Importing this package imports no torch.
"""
from __future__ import annotations

import os

from ...errors import DataError
from ...plugins import Registry
from . import cifar, digits, folder, stl10, svhn
from .base import SPLITS, DatasetSpec, ImageData


def _valid(name: str, spec: object) -> str | None:
    return None if isinstance(spec, DatasetSpec) else f"expected a fixmatch_ray.data.datasets.DatasetSpec, got {spec!r}"


DATASETS: Registry[DatasetSpec] = Registry("dataset", _valid)
for _builtin in (*cifar.SPECS, *svhn.SPECS, stl10.SPEC, digits.SPEC, folder.SPEC):
    DATASETS.add(_builtin.name, _builtin)

__all__ = ["DATASETS", "SPLITS", "DatasetSpec", "ImageData", "check_dataset", "get_spec", "load_dataset", "run_spec"]


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; an unknown name is one :class:`DataError` line."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}") from None


def load_dataset(name: str, root: str | os.PathLike, split: str, download: bool = True) -> ImageData:
    """Split ``split`` (train, test or unlabeled) of dataset ``name`` under ``root``."""
    return get_spec(name).load(os.fspath(root), split, download)


def run_spec(name: str, root: str | os.PathLike, image_size: int | None = None) -> DatasetSpec:
    """The spec a run of dataset ``name`` under ``root`` uses: the registry's, or for a dataset made
    from its files (``folder``) the one its files give (decoded into the cache on first use)."""
    return get_spec(name).of_files(os.fspath(root), image_size)


def check_dataset(name: str, root: str | os.PathLike, download: bool, image_size: int | None = None,
                  decode: bool = True) -> None:
    """A :class:`DataError` when dataset ``name`` cannot be loaded under ``root``. A dataset made
    from its files is decoded into its cache (at ``image_size``), or with ``decode`` off only
    listed: nothing written (a dry run)."""
    spec = get_spec(name)
    if spec.from_files is None:
        spec.load(os.fspath(root), "train", download)
    elif decode:
        spec.of_files(os.fspath(root), image_size)
    else:
        from .layout import read_layout

        read_layout(os.fspath(root))
