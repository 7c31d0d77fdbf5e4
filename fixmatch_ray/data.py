"""Datasets, the labeled split and the per-step sampling of FixMatch.

Images are kept as one uint8 array ``(N, H, W, 3)``; augmentation happens per sample in
:class:`StepDataset`. Everything random here is a pure function of ``(seed, step, position)``:
the split, the order in which samples are drawn and each sample's augmentation. So every DDP
rank sees the same split, a run with G workers draws exactly the samples of a 1-worker run,
and a resumed run needs nothing but its step counter to continue the same stream.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch


class DataError(RuntimeError):
    """A dataset that cannot be loaded: one line saying where the files must go."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool  # horizontal flips keep the label (not for digits: a mirrored 3 is no 3)
    image_size: int
    min_class_count: int  # training images in the smallest class (bounds num_labeled)


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec("cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), True, 32, 5000),
    "cifar100": DatasetSpec("cifar100", 100, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), True, 32, 500),
    # mean/std of the 16x16 training images (tests recompute them)
    "digits": DatasetSpec("digits", 10, (0.3055,) * 3, (0.3189,) * 3, False, 16, 139),
}


@dataclass(frozen=True)
class ImageData:
    images: np.ndarray  # uint8 (N, H, W, 3)
    targets: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.targets)


# -- loading ------------------------------------------------------------------------------------
def load_dataset(name: str, root: str | os.PathLike, train: bool, download: bool = True) -> ImageData:
    """The training or test set of ``name`` (``cifar10``, ``cifar100`` or ``digits``)."""
    if name == "digits":
        return load_digits(train)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, os.fspath(root), train, download)
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def load_digits(train: bool) -> ImageData:
    """scikit-learn's 1797 handwritten digits (8x8, 0..16), as 16x16 RGB uint8 images.

    Fixed split: within each class, every 5th image in scikit-learn's order (the 1st, 6th, ...)
    is a test image: 364 test and 1433 training images, balanced per class.
    """
    from PIL import Image
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    targets = bunch.target.astype(np.int64)
    is_test = np.zeros(len(targets), dtype=bool)
    for c in range(10):
        is_test[np.flatnonzero(targets == c)[::5]] = True
    keep = is_test if not train else ~is_test
    small = np.round(bunch.images[keep] * (255 / 16)).astype(np.uint8)
    size = DATASETS["digits"].image_size
    big = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in small])
    return ImageData(np.repeat(big[..., None], 3, axis=-1), targets[keep])


def _load_cifar(name: str, root: str, train: bool, download: bool) -> ImageData:
    from torchvision import datasets

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
    try:
        if download:  # several workers of one node may start at once: one downloads, the rest wait
            from filelock import FileLock

            os.makedirs(root, exist_ok=True)
            with FileLock(os.path.join(root, f".{name}.lock")):
                ds = Present(root, train=train, download=True)
        else:
            ds = Present(root, train=train, download=False)
    except RuntimeError:
        raise DataError(
            f"{name} not found: expected the extracted '{base.base_folder}' folder of "
            f"{base.filename} at {where} (or run with download on)"
        ) from None
    except Exception as e:  # network errors of the download, in whatever form
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{name} not found at {where} and the download failed ({reason}); put the extracted "
            f"'{base.base_folder}' folder of {base.filename} there"
        ) from None
    return ImageData(np.ascontiguousarray(ds.data), np.asarray(ds.targets, dtype=np.int64))


# -- the labeled split --------------------------------------------------------------------------
def split_labeled(targets: Sequence[int] | np.ndarray, num_labeled: int, seed: int) -> np.ndarray:
    """Indices of a class-balanced labeled subset: ``num_labeled / C`` images of each class.

    A pure function of its inputs (local RNG), so every process draws the same split. The
    unlabeled set is the whole training set, these images included.
    """
    targets = np.asarray(targets)
    classes = np.unique(targets)
    if num_labeled <= 0 or num_labeled % len(classes):
        raise ValueError(f"num_labeled {num_labeled} must be a positive multiple of {len(classes)} classes")
    per_class = num_labeled // len(classes)
    rng = np.random.default_rng([seed, 0x5EED])
    picked = []
    for c in classes:
        idx = np.flatnonzero(targets == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} images, fewer than the {per_class} labels asked per class")
        picked.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(picked))


def expand_labeled(labeled_idx: np.ndarray, batch_size: int, eval_step: int, expand: bool) -> np.ndarray:
    """The reference's ``--expand-labels``: repeat the labeled indices to fill one epoch.

    With ``expand`` (or fewer labels than a batch, where the reference expands too) the list is
    repeated ``ceil(B·eval_step / n)`` times, so one pass over it lasts ``eval_step`` steps.
    Order does not matter: the sampler permutes it.
    """
    n = len(labeled_idx)
    if expand or n < batch_size:
        return np.tile(labeled_idx, math.ceil(batch_size * eval_step / n))
    return labeled_idx


# -- per-step sampling --------------------------------------------------------------------------
LABELED, UNLABELED = 0, 1


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


def stream_positions(seed: int, stream: int, n: int, step: int, batch: int) -> np.ndarray:
    """Which of ``n`` items the ``batch`` draws of ``step`` take: epochs of random permutations.

    Draw ``p = step·batch + j`` is item ``perm_e[p mod n]`` of epoch ``e = p // n``; no sample
    is dropped and a batch may span two epochs.
    """
    p = step * batch + np.arange(batch)
    epochs, offsets = np.divmod(p, n)
    out = np.empty(batch, dtype=np.int64)
    for e in np.unique(epochs):
        sel = epochs == e
        out[sel] = _epoch_permutation(seed, stream, int(e), n)[offsets[sel]]
    return out


class StepBatchSampler:
    """Yields, per optimisation step, this rank's keys ``(stream, step, j, index)``.

    ``batch_size`` and ``ulb_batch_size`` are global; rank ``r`` of ``world_size`` takes the
    contiguous slice ``r/G .. (r+1)/G`` of each, so the union over ranks is the 1-worker batch.
    """

    def __init__(
        self,
        labeled_idx: np.ndarray,
        num_unlabeled: int,
        batch_size: int,
        ulb_batch_size: int,
        seed: int,
        start_step: int,
        total_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        for name, b in (("batch_size", batch_size), ("ulb_batch_size", ulb_batch_size)):
            if b % world_size:
                raise ValueError(f"{name} {b} is not divisible by {world_size} workers")
        self.labeled_idx = np.asarray(labeled_idx)
        self.num_unlabeled = num_unlabeled
        self.b, self.ub = batch_size, ulb_batch_size
        self.seed, self.start, self.total = seed, start_step, total_steps
        self.rank, self.world = rank, world_size

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def keys(self, step: int) -> list[tuple[int, int, int, int]]:
        out = []
        for stream, n, b in ((LABELED, len(self.labeled_idx), self.b), (UNLABELED, self.num_unlabeled, self.ub)):
            pos = stream_positions(self.seed, stream, n, step, b)
            if stream == LABELED:
                pos = self.labeled_idx[pos]
            lo, hi = self.rank * b // self.world, (self.rank + 1) * b // self.world
            out += [(stream, step, j, int(pos[j])) for j in range(lo, hi)]
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        for step in range(self.start, self.total):
            yield self.keys(step)


class StepDataset(torch.utils.data.Dataset):
    """Augments one sample per key; its RNG is seeded by ``(seed, stream, step, j)`` alone."""

    def __init__(self, data: ImageData, spec: DatasetSpec, seed: int):
        from .augment import TransformFixMatch

        self.data, self.seed = data, seed
        self.transform = TransformFixMatch(spec.mean, spec.std, flip=spec.flip)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int, int, int]):
        from PIL import Image

        stream, step, j, index = key
        rng = np.random.default_rng([self.seed, 0xA06, stream, step, j])
        img = Image.fromarray(self.data.images[index])
        y = int(self.data.targets[index])
        if stream == LABELED:
            return stream, (self.transform.labeled(img, rng),), y
        return stream, self.transform.unlabeled(img, rng), y


def collate_step(samples: list) -> dict[str, torch.Tensor]:
    """Stack one step's samples into ``x_lb, y_lb, x_ulb_w, x_ulb_s, y_ulb``."""
    lb = [s for s in samples if s[0] == LABELED]
    ulb = [s for s in samples if s[0] == UNLABELED]
    return {
        "x_lb": torch.stack([s[1][0] for s in lb]),
        "y_lb": torch.tensor([s[2] for s in lb], dtype=torch.long),
        "x_ulb_w": torch.stack([s[1][0] for s in ulb]),
        "x_ulb_s": torch.stack([s[1][1] for s in ulb]),
        "y_ulb": torch.tensor([s[2] for s in ulb], dtype=torch.long),
    }


def normalized_tensor(data: ImageData, spec: DatasetSpec) -> torch.Tensor:
    """The whole set as a normalised float32 ``(N, 3, H, W)`` tensor (for evaluation)."""
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


def train_loader(
    data: ImageData,
    spec: DatasetSpec,
    labeled_idx: np.ndarray,
    *,
    batch_size: int,
    ulb_batch_size: int,
    seed: int,
    start_step: int,
    total_steps: int,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> torch.utils.data.DataLoader:
    """A loader yielding this rank's share of each step's batch, from ``start_step`` on."""
    sampler = StepBatchSampler(
        labeled_idx, len(data), batch_size, ulb_batch_size, seed, start_step, total_steps, rank, world_size
    )
    return torch.utils.data.DataLoader(
        StepDataset(data, spec, seed),
        batch_sampler=sampler,
        collate_fn=collate_step,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
