"""What every torchvision-backed loader shares: opening a dataset (download under a lock, one-line
errors) and joining the parts of a split into one array without a second full copy."""
from __future__ import annotations

import os
from typing import Callable, Sequence, TypeVar

import numpy as np

from ...errors import DataError
from .base import ImageData

T = TypeVar("T")


def open_dataset(make: Callable[[bool], T], root: str, name: str, download: bool, *, missing: str,
                 failed: str, missing_on: tuple[type[BaseException], ...] = ()) -> T:
    """``make(download)``, a torchvision dataset. Several workers of one node may start at once: with
    ``download`` on, one downloads under a per-dataset file lock in ``root`` and the rest wait.

    A failure with download off, or one of type ``missing_on`` (what the dataset class raises for
    files it cannot find), is ``DataError(missing)``; any other is ``DataError(failed)`` with
    ``{reason}`` filled by the error's first line."""
    try:
        if not download:
            return make(False)
        from filelock import FileLock

        os.makedirs(root, exist_ok=True)
        with FileLock(os.path.join(root, f".{name}.lock")):
            return make(True)
    except Exception as e:  # network errors of the download, in whatever form
        if not download or isinstance(e, missing_on):
            raise DataError(missing) from None
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(failed.format(reason=reason)) from None


def join_chw(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> ImageData:
    """``(N_i, 3, H, W)`` uint8 parts and their targets as one ``(ΣN_i, H, W, 3)`` set, filled part by
    part: the peak is the parts plus the result, never a concatenated copy on top."""
    n = sum(len(t) for _, t in parts)
    h, w = parts[0][0].shape[2:]
    images = np.empty((n, h, w, 3), dtype=np.uint8)
    targets = np.empty(n, dtype=np.int64)
    at = 0
    for chw, t in parts:
        images[at:at + len(t)] = chw.transpose(0, 2, 3, 1)
        targets[at:at + len(t)] = t
        at += len(t)
    return ImageData(images, targets)
