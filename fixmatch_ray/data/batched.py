"""The weak and strong views of a whole batch, on the training device, per-sample random.

The training set stays resident as uint8 in a :class:`CropStore`: all 18 column variants of a
32×32 weak crop (9 offsets × mirror), so a weak view of any image is one copy of whole rows
(``index_select``, 8 bytes at a time), the reflect padding folded into the row index. The
strong view adds RandAugmentMC and Cutout (:mod:`.policies.randaugment_batched`); both are
normalised to float32 at the end. The same code runs on CPU and CUDA.
"""
from __future__ import annotations


import torch

import numpy as np

from .datasets import DatasetSpec, ImageData
from .graphs import StepGraph, cuda_capture
from .normalize import normalize
from .policies.base import Policy, Rows, check_views
from .policies.randaugment import MAGNITUDE
from .policies.randaugment_policy import rand_augment_batch
from .sampling import LABELED, UNLABELED, StepBatchSampler, StreamTable


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Source index of padded index ``i`` (already shifted by −pad) under reflect padding."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


class CropStore:
    """A uint8 dataset (M, C, H, W) laid out for fast weak crops, resident on its device.

    A weak crop moves the image by a random column offset (0..2·pad, through reflect padding)
    and mirrors half of them. Where memory allows (``max_bytes``), every image is kept in each
    of its (2·pad+1)·2 column variants, so a crop is a copy of whole rows: one ``index_select``.
    That is 18× the dataset for 32×32 (CIFAR-10's train set: 2.8 GB) and 3× faster per crop
    (0.47 vs 1.50 ms for 448 on one core here) than gathering every pixel's column, which is
    what happens otherwise.
    """

    def __init__(self, images: torch.Tensor, flip: bool, max_bytes: int = 6 << 30):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images (M, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.m, self.c, self.h, self.w = images.shape
        self.flip, self.pad, self.device = flip, int(0.125 * self.w), images.device
        self.offsets = 2 * self.pad + 1
        self.variants = self.offsets * (2 if flip else 1)
        # (offsets, C·H): for each vertical offset, the source row (through the reflect padding)
        # of every output row of every channel, within one image variant
        top = torch.arange(self.offsets, device=self.device).view(-1, 1)
        rows = _reflect(top + torch.arange(self.h, device=self.device) - self.pad, self.h)
        chan = torch.arange(self.c, device=self.device).view(1, self.c, 1) * self.h
        self.row_table = (chan + rows.view(self.offsets, 1, self.h)).view(self.offsets, self.c * self.h)
        self.tabulated = images.numel() * self.variants <= max_bytes
        if not self.tabulated:
            self.data = images.contiguous()
            return
        cols = self._cols(torch.arange(self.variants, device=self.device))  # (V, W)
        self.data = torch.empty((self.m, self.variants, self.c, self.h, self.w), dtype=torch.uint8, device=self.device)
        for v in range(self.variants):  # one variant at a time: no second copy of the whole store
            self.data[:, v] = images.index_select(3, cols[v])

    def _cols(self, variant: torch.Tensor) -> torch.Tensor:
        """Source column of each output column for variants (flip · offsets + left)."""
        w, pad = self.w, self.pad
        left, mirrored = variant % self.offsets, variant >= self.offsets
        cols = _reflect(left.view(-1, 1) + torch.arange(w, device=variant.device) - pad, w)
        return torch.where(mirrored.view(-1, 1), w - 1 - cols, cols)  # padding the mirror = mirroring the padding

    def crop(self, index: torch.Tensor, gen: torch.Generator, rows: Rows | None = None) -> torch.Tensor:
        """Weak augmentation of images ``index``: flip with p=0.5 (if allowed), reflect-pad by 1/8
        of the side, random crop back; uint8 (N, C, H, W). With ``rows``, ``index`` is those rows of
        a bigger batch, whose draws are all made (see :class:`.policies.base.Rows`)."""
        n, c, h, w, dev = len(index), self.c, self.h, self.w, self.device
        rows = rows or Rows.all(n)
        coin = rows.of(torch.randint(0, 2, (rows.total,), generator=gen, device=dev)) if self.flip else 0
        top, left = rows.of(torch.randint(0, self.offsets, (2, rows.total), generator=gen, device=dev), 1)
        variant = coin * self.offsets + left
        image = index * self.variants + variant if self.tabulated else index
        flat = self.data.view(-1, w)
        if w % 8 == 0:  # move rows as 8-byte words
            flat = flat.view(torch.int64)
        rows = self.row_table.index_select(0, top) + (image * (c * h)).view(n, 1)
        out = flat.index_select(0, rows.view(-1)).view(torch.uint8).view(n, c, h, w)
        if self.tabulated:
            return out
        cols = self._cols(variant)
        return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def crop_batch(images: torch.Tensor, index: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """:meth:`CropStore.crop` of ``images[index]``, for one-off use: the store keeps the images as
    they are (tabulating 18 variants to crop once would cost more than the column gather)."""
    return CropStore(images, flip, max_bytes=0).crop(index, gen)


def weak_batch(x: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """:func:`crop_batch` of every image of the uint8 batch ``x``."""
    return crop_batch(x.contiguous(), torch.arange(len(x), device=x.device), gen, flip)


def strong_batch(x: torch.Tensor, gen: torch.Generator, flip: bool, n: int = 2, m: int = MAGNITUDE) -> torch.Tensor:
    """weak, then RandAugmentMC with its Cutout, on the uint8 batch ``x``."""
    return rand_augment_batch(weak_batch(x, gen, flip), gen, n, m)


class BatchAugmenter:
    """Weak or strong views of images of a :class:`CropStore` (uint8, resident on the device),
    as normalised float32 (N, 3, H, W). ``labeled`` and ``unlabeled`` name the views an algorithm
    needs of each image (see :data:`.policies.base.VIEWS`), drawn in that order."""

    def __init__(self, mean, std, flip: bool, policy: Policy | None = None, labeled: tuple[str, ...] = ("weak",),
                 unlabeled: tuple[str, ...] = ("weak", "strong")):
        self.mean, self.std, self.flip, self.policy = tuple(mean), tuple(std), flip, policy
        self.strong_batch = policy.strong_batch if policy is not None else rand_augment_batch
        self.kinds = {"labeled": check_views(labeled, "labeled"), "unlabeled": check_views(unlabeled, "unlabeled")}

    def store(self, images: torch.Tensor) -> CropStore:
        return CropStore(images, self.flip)

    def normalize(self, x_u8: torch.Tensor) -> torch.Tensor:
        return normalize(x_u8, self.mean, self.std)

    def weak(self, store: CropStore, index: torch.Tensor, gen: torch.Generator, rows: Rows | None = None) -> torch.Tensor:
        return self.view(store, index, gen, rows, "weak")[1]

    def strong(self, store: CropStore, index: torch.Tensor, gen: torch.Generator,
               rows: Rows | None = None) -> torch.Tensor:
        return self.view(store, index, gen, rows, "strong")[1]

    def view(self, store: CropStore, index: torch.Tensor, gen: torch.Generator, rows: Rows | None,
             kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``weak`` or ``strong`` view of images ``index`` (``rows`` of the batch): its uint8 weak
        crop, and the view normalised (a strong view: the policy on that crop)."""
        crop = store.crop(index, gen, rows)
        return crop, self.normalize(self.strong_batch(crop, gen, rows=rows) if kind == "strong" else crop)

    def views(self, store: CropStore, index: torch.Tensor, gen: torch.Generator, rows: Rows | None,
              side: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The ``labeled`` or ``unlabeled`` views of images ``index`` as (crop, view) pairs, each
        drawn after the one before it."""
        return [self.view(store, index, gen, rows, kind) for kind in self.kinds[side]]

    def unlabeled(self, store: CropStore, index: torch.Tensor, gen: torch.Generator,
                  rows: Rows | None = None) -> tuple[torch.Tensor, ...]:
        """The unlabeled views of images ``index``, normalised."""
        return tuple(view for _, view in self.views(store, index, gen, rows, "unlabeled"))

    def __call__(self, x_u8: torch.Tensor, gen: torch.Generator, strong: bool) -> torch.Tensor:
        """The whole uint8 batch ``x_u8``, once (an untabulated store, as :func:`crop_batch`)."""
        store, index = CropStore(x_u8, self.flip, max_bytes=0), torch.arange(len(x_u8), device=x_u8.device)
        return self.strong(store, index, gen) if strong else self.weak(store, index, gen)


def normalized_tensor(data: ImageData, spec: DatasetSpec) -> torch.Tensor:
    """The whole set as a normalised float32 ``(N, 3, H, W)`` tensor (for evaluation)."""
    return normalize(torch.from_numpy(data.images).permute(0, 3, 1, 2), spec.mean, spec.std)


class EvalImages:
    """A test set resident on the device as uint8 (CIFAR's 10,000: 31 MB), normalised batch by
    batch with exactly the host's float32 ops (:func:`normalized_tensor`: the same IEEE divisions
    and subtractions on either device, bit for bit), and split over DDP ranks."""

    def __init__(self, data: ImageData, spec: DatasetSpec, device: torch.device):
        self.x = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous().to(device)
        self.y = torch.from_numpy(data.targets).to(device)
        self.mean, self.std = spec.mean, spec.std

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1):
        """Normalised float32 ``(x, y)`` batches of rank ``rank``'s contiguous share of the set."""
        n = len(self.y)
        lo, hi = rank * n // world_size, (rank + 1) * n // world_size
        for start in range(lo, hi, batch_size):
            stop = min(start + batch_size, hi)
            yield self.prepare(self.x[start:stop]), self.y[start:stop]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of resident images as the network reads them."""
        return normalize(x, self.mean, self.std)


def device_generator(device: torch.device) -> torch.Generator:
    """The augmentation's generator, on the device it draws on (the fake-CUDA test swaps it)."""
    return torch.Generator(device=device)


def graph_capture(fn, gen, *inputs):
    """How a step's augmentation is captured (:func:`.graphs.cuda_capture`; tests swap it)."""
    return cuda_capture(fn, gen, *inputs)


def step_seed(seed: int, step: int) -> int:
    """The augmentation generator's seed at ``step`` (a resumed run continues the same stream)."""
    return int(np.random.SeedSequence([seed, 0xA06, step]).generate_state(1)[0])


class DeviceBatches:
    """``aug_backend: tensor``: the training set lives on the device as uint8 (in the layout of
    :class:`CropStore`) and each step's batch is augmented there, per sample.

    The step's indices are the global draws of :class:`StepBatchSampler` (as on the PIL path),
    read from device-resident :class:`StreamTable` s; the augmentation generator is seeded from
    ``(seed, step)``, so a resumed run continues the same stream. Each rank augments only its
    slice of the global batch, drawing every random parameter for the whole batch from the same
    stream, so the samples do not depend on the number of workers and a rank does 1/G of the work.
    Per step, no host list, no ``torch.tensor`` copy and no host sync. With ``cuda_graphs`` on a
    CUDA device, the augmentation of a step is replayed as one captured graph (:mod:`.graphs`):
    the same values; the batch's tensors are then fresh copies, as eager ones are.
    """

    def __init__(self, data: ImageData, sampler: StepBatchSampler, augmenter: BatchAugmenter, seed: int,
                 device: torch.device, rank: int = 0, world_size: int = 1, cuda_graphs: bool = False):
        if sampler.b % world_size or sampler.ub % world_size:
            raise ValueError(f"batches of {sampler.b}/{sampler.ub} do not divide over {world_size} workers")
        self.sampler, self.augment, self.seed, self.device = sampler, augmenter, seed, device
        self.step, self.total = sampler.start, sampler.total
        images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous().to(device)
        self.targets = torch.from_numpy(data.targets).to(device)
        self.store = augmenter.store(images)
        del images
        self.gen = device_generator(device)
        self.rank, self.world = rank, world_size
        self.tables = (StreamTable(seed, LABELED, sampler.labeled_idx, device),
                       StreamTable(seed, UNLABELED, np.arange(sampler.num_unlabeled), device))
        self.rows = tuple(Rows(rank * b // world_size, (rank + 1) * b // world_size, b) for b in (sampler.b, sampler.ub))
        # on CUDA, each step's augmentation replayed as one graph (same kernels, same draws: .graphs)
        self.graph = StepGraph(self._augment, self.gen, graph_capture) if cuda_graphs and device.type == "cuda" else None

    @property
    def graphed(self) -> bool:
        """Whether steps replay a captured CUDA graph (so far)."""
        return self.graph is not None and self.graph.captured

    def __iter__(self) -> "DeviceBatches":
        return self

    def indices(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's labeled and unlabeled item indices at ``step``, on the device."""
        return tuple(table.take(step * rows.total + rows.start, rows.stop - rows.start)
                     for table, rows in zip(self.tables, self.rows))

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.step >= self.total:
            raise StopIteration
        lb, ulb = self.indices(self.step)
        seed = step_seed(self.seed, self.step)
        self.step += 1
        if self.graph is not None:
            return self.graph(seed, lb, ulb)
        self.gen.manual_seed(seed)
        return self._augment(lb, ulb)

    def _augment(self, lb: torch.Tensor, ulb: torch.Tensor) -> dict[str, torch.Tensor]:
        """The step's views of items ``lb`` and ``ulb``, drawn from the (seeded) generator."""
        rows_lb, rows_ulb = self.rows
        aug, store, gen = self.augment, self.store, self.gen
        labeled = aug.views(store, lb, gen, rows_lb, "labeled")  # labeled views first, then unlabeled
        unlabeled = aug.views(store, ulb, gen, rows_ulb, "unlabeled")
        batch = {
            "x_lb": [view for _, view in labeled],
            "y_lb": self.targets.index_select(0, lb),
            "x_ulb": [view for _, view in unlabeled],
            "idx_ulb": ulb,
        }
        policy = aug.policy
        if policy is not None and policy.learns:  # probes of the first labeled view's weak crop, drawn last
            probes, batch["probe"] = policy.probe_batch(labeled[0][0], gen, rows_lb)
            batch["x_probe"] = aug.normalize(probes)
        return batch
