"""CIFAR-10 and CIFAR-100 through torchvision's own classes (its on-disk format, its download).

The labeled split is the official one (:func:`..splits.split_by_distribution`, the rule of
``scripts/create_split.py``), over the training images in torchvision's order: ``data_batch_1``
.. ``data_batch_5`` (CIFAR-100: ``train``), labels as stored (CIFAR-100: ``fine_labels``). The
official ``scripts/create_datasets.py`` (``_load_cifar10``, ``_load_cifar100``) reads the same
batches in the same order from the dataset's MATLAB release (``data_batch_{1..5}.mat``,
``train.mat``, ``labels`` / ``fine_labels`` flattened, no renumbering): the MATLAB and Python
releases are the same batches in two encodings (not compared image by image here: the files are
not offline), so ``split_seed`` k with ``num_labeled`` n is
the official ``cifar10.k@n`` (``cifar100.k@n``), image for image. CIFAR's classes are exactly
balanced (5,000 / 500 images), where the rule deals the labels round-robin: ``n / C`` per class
when ``C`` divides ``n``.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from ...errors import DataError
from .base import DatasetSpec, ImageData
from .torchvision_io import open_dataset


def load_cifar(name: str, root: str, split: str, download: bool) -> ImageData:
    """The train or test set of ``cifar10``/``cifar100`` under ``root``; downloaded if allowed."""
    from torchvision import datasets

    if split not in ("train", "test"):
        raise DataError(f"{name} has no {split!r} split; expected train or test")
    train = split == "train"
    base = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100

    class Present(base):  # type: ignore[misc, valid-type]
        # torchvision checks the md5 of every file at each load; presence is what matters here
        # (the archive's md5 is still checked when it is downloaded).
        def _check_integrity(self) -> bool:
            files = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in files)

        def _load_meta(self) -> None:
            pass

    where = os.path.join(root, base.base_folder)
    ds = open_dataset(
        lambda dl: Present(root, train=train, download=dl), root, name, download, missing_on=(RuntimeError,),
        missing=f"{name} not found: expected the extracted '{base.base_folder}' folder of "
                f"{base.filename} at {where} (or run with download on)",
        failed=f"{name} not found at {where} and the download failed ({{reason}}); put the extracted "
               f"'{base.base_folder}' folder of {base.filename} there")
    return ImageData(np.ascontiguousarray(ds.data), np.asarray(ds.targets, dtype=np.int64))


SPECS = (
    DatasetSpec("cifar10", 10, 32, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), True, 50_000,
                functools.partial(load_cifar, "cifar10"),
                arch_defaults={"wideresnet": {"depth": 28, "width": 2},
                               "resnext": {"depth": 29, "width": 4, "cardinality": 4}}),
    DatasetSpec("cifar100", 100, 32, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), True, 50_000,
                functools.partial(load_cifar, "cifar100"),
                arch_defaults={"wideresnet": {"depth": 28, "width": 8},
                               "resnext": {"depth": 29, "width": 64, "cardinality": 8}}),
)
