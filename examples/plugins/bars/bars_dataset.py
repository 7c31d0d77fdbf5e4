"""A generated dataset as a fixmatch_ray dataset plugin: 16×16 noise with a bright horizontal bar
whose height is the class (4 classes; 30 training and 10 test images each), made on the fly."""
from __future__ import annotations

import numpy as np

from fixmatch_ray.data.datasets import DatasetSpec, ImageData
from fixmatch_ray.errors import DataError

SIZE, CLASSES = 16, 4
PER_CLASS = {"train": 30, "test": 10}


def load_bars(root: str, split: str, download: bool) -> ImageData:
    """Split ``train`` or ``test``; ``root`` and ``download`` are unused (nothing is on disk)."""
    if split not in PER_CLASS:
        raise DataError(f"bars has no {split!r} split; expected train or test")
    rng = np.random.default_rng(list(PER_CLASS).index(split))
    targets = np.repeat(np.arange(CLASSES), PER_CLASS[split])
    images = rng.integers(0, 96, (len(targets), SIZE, SIZE, 3), dtype=np.uint8)
    for image, c in zip(images, targets):
        row = 1 + 4 * c + int(rng.integers(0, 2))
        image[row:row + 2] = 255
    return ImageData(images, targets.astype(np.int64))


# mean/std: those of the training images; a horizontal flip keeps the bar's height, so flips are fine
SPEC = DatasetSpec("bars", num_classes=CLASSES, image_size=SIZE, mean=(0.2881, 0.2871, 0.2877),
                   std=(0.2876, 0.2880, 0.2878),
                   flip=True, num_train=CLASSES * PER_CLASS["train"], load=load_bars,
                   arch_defaults={"wideresnet": {"depth": 10, "width": 1}})
