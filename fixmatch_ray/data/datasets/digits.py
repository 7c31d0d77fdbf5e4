"""scikit-learn's bundled handwritten digits: real data that works offline (demos and tests).

Not in the paper. The labeled split is the official rule all the same
(:func:`..splits.split_by_distribution` over the 1,433 training images in the order below, classes
= digits): the classes hold 139..146 images, so 20 labels are 2 per class and 50 are 5.
"""
from __future__ import annotations

import numpy as np

from ...errors import DataError
from .base import DatasetSpec, ImageData

SIZE = 16


def load_digits(root: str, split: str, download: bool) -> ImageData:
    """The 1797 8x8 digits (0..16) as 16x16 RGB uint8 images; ``root``/``download`` are unused.

    Fixed split: within each class, every 5th image in scikit-learn's order (the 1st, 6th, ...)
    is a test image: 364 test and 1433 training images, balanced per class.
    """
    from PIL import Image
    from sklearn.datasets import load_digits as sk_digits

    if split not in ("train", "test"):
        raise DataError(f"digits has no {split!r} split; expected train or test")
    bunch = sk_digits()
    targets = bunch.target.astype(np.int64)
    is_test = np.zeros(len(targets), dtype=bool)
    for c in range(10):
        is_test[np.flatnonzero(targets == c)[::5]] = True
    keep = is_test if split == "test" else ~is_test
    small = np.round(bunch.images[keep] * (255 / 16)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(a).resize((SIZE, SIZE), Image.BILINEAR)) for a in small])
    return ImageData(np.repeat(big[..., None], 3, axis=-1), targets[keep])


# mean/std of the 16x16 training images (tests recompute them)
SPEC = DatasetSpec("digits", 10, SIZE, (0.3055,) * 3, (0.3189,) * 3, False, 1433, load_digits,
                   arch_defaults={"wideresnet": {"depth": 10, "width": 1},
                                  "resnext": {"depth": 11, "width": 4, "cardinality": 2}})
