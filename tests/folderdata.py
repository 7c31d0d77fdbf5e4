"""scikit-learn's digits written as image files in a folder dataset's layouts (class folders, CSV)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fixmatch_ray.data.datasets.digits import load_digits

CLASSES = tuple(f"digit{d}" for d in range(10))  # not the numbers: class names are names


def digits_parts(train: int = 12, unlabeled: int = 4, val: int = 3, test: int = 4) -> dict[str, list]:
    """Per part, (uint8 16x16 RGB image, class id) pairs: the first images of each class of
    digits' training set (train, unlabeled, val) and of its test set."""
    tr, te = load_digits("", "train", False), load_digits("", "test", False)
    parts: dict[str, list] = {"train": [], "unlabeled": [], "val": [], "test": []}
    for c in range(10):
        mine = np.flatnonzero(tr.targets == c)
        cuts = np.cumsum([0, train, unlabeled, val])
        for part, lo, hi in zip(("train", "unlabeled", "val"), cuts[:-1], cuts[1:]):
            parts[part] += [(tr.images[i], c) for i in mine[lo:hi]]
        parts["test"] += [(te.images[i], c) for i in np.flatnonzero(te.targets == c)[:test]]
    return parts


def _save(img: np.ndarray, path: Path, fmt: str, size: int | None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(img)
    if size is not None:
        pil = pil.resize((size, size), Image.BILINEAR)
    pil.save(path, quality=95) if fmt == "jpg" else pil.save(path)


def write_digits_folder(root: Path, fmt: str = "png", size: int | None = None, val: bool = True,
                        **counts: int) -> Path:
    """``root/train/<class>/``, ``root/unlabeled/``, ``root/test/<class>/`` (and ``root/val/<class>/``)."""
    for part, items in digits_parts(**counts).items():
        if part == "val" and not val:
            continue
        for i, (img, c) in enumerate(items):
            where = root / part / (f"batch{i % 2}" if part == "unlabeled" else CLASSES[c])
            _save(img, where / f"{i:04d}.{fmt}", fmt, size)
    return root


def write_digits_csv(root: Path, fmt: str = "png", size: int | None = None, **counts: int) -> Path:
    """The CSV layout: every image in one flat folder, ``train.csv`` (unlabeled rows with an empty
    label), ``test.csv`` and ``val.csv``."""
    root.mkdir(parents=True, exist_ok=True)
    for part, items in digits_parts(**counts).items():
        name = "train" if part == "unlabeled" else part
        path = root / f"{name}.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["path", "label"])
            for i, (img, c) in enumerate(items):
                rel = f"images/{part}_{i:04d}.{fmt}"
                _save(img, root / rel, fmt, size)
                w.writerow([rel, "" if part == "unlabeled" else CLASSES[c]])
    return root
