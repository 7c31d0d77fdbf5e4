"""The per-step sampling of FixMatch and the per-image (PIL) data-loader path.

Images are kept as one uint8 array ``(N, H, W, 3)``; augmentation happens per sample in
:class:`StepDataset`. Everything random here is a pure function of ``(seed, step, position)``:
the split, the order in which samples are drawn and each sample's augmentation. So every DDP
rank sees the same split, a run with G workers draws exactly the samples of a 1-worker run,
and a resumed run needs nothing but its step counter to continue the same stream.
"""
from __future__ import annotations

import functools
from typing import Iterator

import numpy as np
import torch

from .datasets import DatasetSpec, ImageData

# -- per-step sampling --------------------------------------------------------------------------
LABELED, UNLABELED = 0, 1


def _permutation(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


_epoch_permutation = functools.lru_cache(maxsize=8)(_permutation)


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

    def rows(self, stream: int) -> tuple[int, int]:
        """This rank's slice ``lo..hi`` of the global batch of ``stream``."""
        b = self.b if stream == LABELED else self.ub
        return self.rank * b // self.world, (self.rank + 1) * b // self.world

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole step's item indices (labeled into the training set, unlabeled), every rank's."""
        lb = self.labeled_idx[stream_positions(self.seed, LABELED, len(self.labeled_idx), step, self.b)]
        return lb, stream_positions(self.seed, UNLABELED, self.num_unlabeled, step, self.ub)

    def keys(self, step: int) -> list[tuple[int, int, int, int]]:
        out = []
        for stream, pos in zip((LABELED, UNLABELED), self.indices(step)):
            lo, hi = self.rows(stream)
            out += [(stream, step, j, int(pos[j])) for j in range(lo, hi)]
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        for step in range(self.start, self.total):
            yield self.keys(step)


class StreamTable:
    """The items of one stream's draws, resident on the device, for :class:`DeviceBatches`: a step's
    indices are a slice of it (no per-step host lists, ``torch.tensor`` copies or syncs).

    Draw ``p`` is ``items[perm_e[p mod n]]`` of epoch ``e = p // n`` (:func:`stream_positions`);
    whole epochs are laid out back to back in blocks of at least ``block_items`` draws, computed
    on the host and copied up once per block (pinned, asynchronous on CUDA): every ~146 steps for
    CIFAR's unlabeled stream, every ~1024 for its labeled one.
    """

    def __init__(self, seed: int, stream: int, items: np.ndarray, device: torch.device, block_items: int = 1 << 16):
        self.seed, self.stream, self.items, self.device = seed, stream, np.asarray(items), device
        self.n = len(self.items)
        self.epochs = max(1, block_items // self.n)  # epochs per block
        self.size = self.epochs * self.n  # draws per block
        self.blocks: dict[int, torch.Tensor] = {}

    def _block(self, k: int) -> torch.Tensor:
        if k not in self.blocks:
            epochs = range(k * self.epochs, (k + 1) * self.epochs)
            host = torch.from_numpy(self.items[np.concatenate([_permutation(self.seed, self.stream, e, self.n)
                                                                for e in epochs])].astype(np.int64))
            if self.device.type == "cuda":
                host = host.pin_memory()  # the caching host allocator keeps it until the copy is done
            self.blocks = {j: t for j, t in self.blocks.items() if j >= k - 1}  # this one and the one before
            self.blocks[k] = host.to(self.device, non_blocking=True)
        return self.blocks[k]

    def take(self, start: int, count: int) -> torch.Tensor:
        """Items of draws ``start .. start+count``, on the device (a view when inside one block)."""
        parts = []
        while count > 0:
            k, offset = divmod(start, self.size)
            m = min(count, self.size - offset)
            parts.append(self._block(k)[offset:offset + m])
            start, count = start + m, count - m
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class StepDataset(torch.utils.data.Dataset):
    """Augments one sample per key into the views the algorithm names (``labeled``, ``unlabeled``);
    its RNG is seeded by ``(seed, stream, step, j)`` alone."""

    def __init__(self, data: ImageData, spec: DatasetSpec, seed: int, policy: str = "randaugment",
                 strong_aug: str = "full", labeled: tuple[str, ...] = ("weak",),
                 unlabeled: tuple[str, ...] = ("weak", "strong")):
        from .policies import build_policy
        from .policies.randaugment import ViewTransform

        self.data, self.seed = data, seed
        # a policy that learns cannot run here: loader processes never see its updates (it declares
        # the tensor backend alone, and the config holds it to that)
        self.transform = ViewTransform(spec.mean, spec.std, flip=spec.flip,
                                       policy=build_policy(policy, strong_aug=strong_aug), labeled=labeled,
                                       unlabeled=unlabeled)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int, int, int]):
        from PIL import Image

        stream, step, j, index = key
        rng = np.random.default_rng([self.seed, 0xA06, stream, step, j])
        img = Image.fromarray(self.data.images[index])
        y = int(self.data.targets[index])
        return stream, self.transform.views(img, rng, "labeled" if stream == LABELED else "unlabeled"), y, index


def _stack_views(samples: list) -> list[torch.Tensor]:
    """View ``v`` of every sample, stacked, for each view ``v``."""
    return [torch.stack([s[1][v] for s in samples]) for v in range(len(samples[0][1]))]


def collate_step(samples: list) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """Stack one step's samples into ``x_lb`` (a list: one batch per labeled view), ``y_lb``,
    ``x_ulb`` (one batch per unlabeled view) and ``idx_ulb``."""
    lb = [s for s in samples if s[0] == LABELED]
    ulb = [s for s in samples if s[0] == UNLABELED]
    return {
        "x_lb": _stack_views(lb),
        "y_lb": torch.tensor([s[2] for s in lb], dtype=torch.long),
        "x_ulb": _stack_views(ulb),
        "idx_ulb": torch.tensor([s[3] for s in ulb], dtype=torch.long),
    }


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
    policy: str = "randaugment",
    pin_memory: bool = False,
    strong_aug: str = "full",
    labeled: tuple[str, ...] = ("weak",),
    unlabeled: tuple[str, ...] = ("weak", "strong"),
) -> torch.utils.data.DataLoader:
    """A loader yielding this rank's share of each step's batch, from ``start_step`` on
    (``policy``, ``strong_aug``: the run config's; ``labeled``, ``unlabeled``: the algorithm's views)."""
    sampler = StepBatchSampler(
        labeled_idx, len(data), batch_size, ulb_batch_size, seed, start_step, total_steps, rank, world_size
    )
    return torch.utils.data.DataLoader(
        StepDataset(data, spec, seed, policy, strong_aug, labeled, unlabeled),
        batch_sampler=sampler,
        collate_fn=collate_step,
        num_workers=num_workers,
        persistent_workers=False,
        # only for a CUDA training device: pinning opens a CUDA context in every CPU-only process
        pin_memory=pin_memory,
    )
