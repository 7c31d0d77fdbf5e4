"""What a dataset is to the project: a torch-free spec, and its images as one uint8 array.

A spec says everything the rest of the code needs to know (classes, image size, mean/std, whether
weak augmentation may flip, the network the paper uses, how labels are split) and how to load
each split. Specs import no torch, so the config can validate names and label counts cheaply;
the loaders import torchvision only when called.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ..splits import check_distribution_labels, official_split

SPLITS = ("train", "test", "unlabeled", "val")


@dataclass(frozen=True)
class ImageData:
    images: np.ndarray  # uint8 (N, H, W, 3)
    targets: np.ndarray  # int64 (N,); -1 where unlabeled

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool  # horizontal flips keep the label (not for digits: a mirrored 3 is no 3)
    num_train: int  # training images, the labeled pool (bounds num_labeled)
    load: Callable[[str, str, bool], ImageData]  # (root, split, download) -> images
    # network shape per arch as the reference code picks it, e.g. {"wideresnet": {"depth": 28, "width": 2}}
    arch_defaults: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # the labeled split: (data root, train targets, num_labeled, seed) -> indices into the train
    # set; by default the official create_split.py rule (data.splits.official_split)
    split: Callable[[str, np.ndarray, int, int], np.ndarray] = field(default=None)  # type: ignore[assignment]
    # the split whose images form the unlabeled set when it is more than the train set (STL-10:
    # "train+unlabeled"); it must start with the train images, in order, so labeled indices hold
    unlabeled_split: str | None = None
    # why num_labeled cannot be split under this dataset's own rule (STL-10: its folds), or None;
    # the official rule's bound (1..num_train) when not given
    check_labels: Callable[[int], str | None] | None = None
    # seeds run 0..num_seeds-1 where the seed picks one of a fixed set (STL-10: its 10 folds)
    num_seeds: int | None = None
    # the class names, class i first (None: the classes are numbered)
    classes: tuple[str, ...] | None = None
    # a dataset whose classes, size and statistics come from its files (``folder``): (data root,
    # image_size or None) -> the spec of the files there; None for a dataset fixed in advance
    from_files: Callable[[str, int | None], "DatasetSpec"] | None = None
    # what the run record keeps of the dataset beyond the above (folder: its cache entry, counts)
    facts: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.split is None:
            object.__setattr__(self, "split", official_split)

    def of_files(self, root: str, image_size: int | None) -> "DatasetSpec":
        """The spec a run of this dataset under ``root`` uses (itself unless made from its files)."""
        return self if self.from_files is None else self.from_files(root, image_size)

    def describe(self) -> dict[str, object]:
        """What the run record says of the dataset: classes, size, normalisation, and its facts."""
        return {"name": self.name, "num_classes": self.num_classes, "classes": list(self.classes or
                range(self.num_classes)), "image_size": self.image_size, "mean": list(self.mean),
                "std": list(self.std), **self.facts}

    def check_seed(self, seed: int) -> str | None:
        """Why ``seed`` cannot be used with this dataset, or None."""
        if self.num_seeds is not None and not 0 <= seed < self.num_seeds:
            return (f"{self.name} picks its labeled set by the seed, one of its {self.num_seeds} folds: "
                    f"the seed must be 0..{self.num_seeds - 1}, got {seed}")
        return None

    def check_num_labeled(self, n: int) -> str | None:
        """Why ``n`` labels cannot be split (the dataset's rule; the official one by default), or None."""
        if self.check_labels is not None:
            return self.check_labels(n)
        return check_distribution_labels(self.name, self.num_train, n)
