"""SVHN through torchvision's ``SVHN`` (its ``.mat`` files), and the official label split.

Spec facts (google-research/fixmatch): 10 classes, 32×32 RGB, weak augmentation = reflect pad 4
and crop **without** horizontal flip (``libml/augment.py``: ``svhn=Primitives.s(4)``), WRN-28-2,
wd 5e-4 (the ``fixmatch.py`` defaults, as for CIFAR-10).

Which SVHN: the official code has two datasets. ``svhn`` puts the 531,131 ``extra`` images into
the training data (unlabeled set and label pool); ``svhn_noextra`` uses the 73,257 ``train``
images alone. The paper's Table 2 used ``svhn_noextra`` (an author, google-research/fixmatch
issue #71: "We run experiments with the smaller svhn_noextra dataset"), so ``extra=False`` is the
default here.

The labeled split follows the class distribution (:func:`..splits.split_by_distribution`, the
rule of the official ``scripts/create_split.py`` for every dataset), not class balance: SVHN's
classes are unbalanced (the digit 1 has 13,861 train images, the digit 9 4,659), so 40 labels
give the digit 1 seven and the digits 0, 6, 7, 8, 9 three each; any count from 1 to every
training image works.

Registered as two datasets: ``svhn`` (the official ``svhn_noextra``, Table 2's) and ``svhn_extra``
(the official ``svhn``: ``extra`` joins the training data). Both test on the 26,032 ``test`` images.

Mean/std: the per-channel figures published for SVHN's ``train`` split over all pixels, (0.4377,
0.4438, 0.4728) / (0.1980, 0.2010, 0.1970), as dozens of PyTorch codebases use them; they cannot be
recomputed offline here (``channel_mean_std(load_svhn(root).images)`` does it from the real files).
``svhn_extra`` keeps them. The official code does not whiten (``--whiten`` is off: every dataset is
``x/127.5 − 1``); a per-channel affine input map is absorbed by the first conv and the BatchNorm after
it, except at the zero padding of the image border.

Deviation: the official ``-1`` datasets hold the first record of the (reordered) unlabeled file out
as a validation image; here every training image stays in the unlabeled set.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np

from ...errors import DataError
from ..splits import split_by_distribution
from .base import DatasetSpec, ImageData
from .torchvision_io import join_chw, open_dataset

SPLIT_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


# -- loading ------------------------------------------------------------------------------------
def load_svhn(root: str | os.PathLike, split: str = "train", download: bool = True,
              extra: bool = False) -> ImageData:
    """SVHN's ``train`` (73,257) or ``test`` (26,032) images, uint8 ``(N, 32, 32, 3)``.

    Targets are the digits 0..9 (the ``.mat`` files label a 0 as 10; torchvision maps it to 0).
    ``extra`` (training split only) appends the 531,131 ``extra`` images after ``train``, in file
    order: the official ``svhn``, 604,388 images. The ``.mat`` files sit directly in ``root``, as
    torchvision keeps them.
    """
    if split not in ("train", "test"):
        raise DataError(f"svhn split must be 'train' or 'test', got {split!r}")
    parts = ["train", "extra"] if split == "train" and extra else [split]
    root = os.fspath(root)
    return join_chw([_load_part(root, p, parts, download) for p in parts])


def _load_part(root: str, part: str, parts: list[str], download: bool) -> tuple[np.ndarray, np.ndarray]:
    """One ``.mat`` file through torchvision: images (N, 3, 32, 32), digits 0..9."""
    from torchvision import datasets

    class Present(datasets.SVHN):
        # torchvision hashes the whole file at each load (extra: 1.3 GB); presence is what
        # matters here. A download is still checked against its md5 by download_url.
        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

        def download(self) -> None:
            if not self._check_integrity():
                super().download()

    files = ", ".join(SPLIT_FILES[p] for p in parts)
    ds = open_dataset(lambda dl: Present(root, split=part, download=dl), root, "svhn", download,
                      missing=f"svhn not found: expected {files} in {root} (or run with download on)",
                      failed=f"svhn not found at {root} and the download failed ({{reason}}); put {files} there")
    return ds.data, np.asarray(ds.labels, dtype=np.int64)


# -- the official split -------------------------------------------------------------------------
def split_svhn(targets: Sequence[int] | np.ndarray, num_labeled: int, seed: int) -> np.ndarray:
    """:func:`split_by_distribution` of SVHN targets (digits 0..9) in the official class order.

    The official files number the classes digit − 1 (digit 1 is class 0, digit 0 is class 9);
    torchvision numbers them by digit. The class order decides ties and the RNG order, so the
    digits are renumbered the official way first: with the same files and seed, the indices are
    those of the official ``svhn_noextra.<seed>@<num_labeled>`` (``svhn`` with ``extra``) split.
    """
    targets = np.asarray(targets)
    return split_by_distribution((targets - 1) % 10, num_labeled, seed)


# -- statistics ---------------------------------------------------------------------------------
def channel_mean_std(images: np.ndarray, chunk: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``(N, H, W, C)`` images scaled to [0, 1], over all pixels
    (how the CIFAR figures of ``DatasetSpec`` are defined); chunked, in float64."""
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        total += x.sum(0)
        squares += (x * x).sum(0)
    n = images.size // images.shape[-1]
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# -- the registry's specs -----------------------------------------------------------------------
NUM_TRAIN = 73_257  # train_32x32.mat
NUM_EXTRA = 531_131  # extra_32x32.mat


def svhn_split(root: str, targets: np.ndarray, num_labeled: int, seed: int) -> np.ndarray:
    """The registry's split: :func:`split_svhn` (``root`` unused)."""
    return split_svhn(targets, num_labeled, seed)


def _spec(name: str, extra: bool) -> DatasetSpec:
    num_train = NUM_TRAIN + (NUM_EXTRA if extra else 0)
    return DatasetSpec(
        name, 10, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False, num_train,
        functools.partial(load_svhn, extra=extra),
        arch_defaults={"wideresnet": {"depth": 28, "width": 2},
                       "resnext": {"depth": 29, "width": 4, "cardinality": 4}},
        split=svhn_split)


SPECS = (_spec("svhn", extra=False), _spec("svhn_extra", extra=True))
