"""RandAugmentMC as the paper's RA policy: the draws of a whole batch and the policy object.

The ops themselves (PIL-exact, on uint8 batches) are in :mod:`.randaugment_batched`, the
per-image reference in :mod:`.randaugment`.
"""
from __future__ import annotations

import torch

from .base import Policy, Rows
from .randaugment import MAGNITUDE, OP_NAMES, cutout_size, rand_augment_mc
from .randaugment_batched import _prepare, _round, cutout_batch


def draw_ops(n_images: int, gen: torch.Generator, device: torch.device, n: int = 2, m: int = MAGNITUDE):
    """RandAugmentMC's choices, (n, N) each: op uniform over 14 (with replacement), level
    uniform in 1..m−1 (official ``randint(1, magnitude)``: 1..9), sign ±1, active with p = 0.5."""
    op = torch.randint(0, len(OP_NAMES), (n, n_images), generator=gen, device=device)
    level = torch.randint(1, m, (n, n_images), generator=gen, device=device)
    sign = torch.randint(0, 2, (n, n_images), generator=gen, device=device) * 2 - 1
    active = torch.rand(n, n_images, generator=gen, device=device) < 0.5
    return op, level, sign, active


def rand_augment_drawn(x: torch.Tensor, op: torch.Tensor, level: torch.Tensor, sign: torch.Tensor,
                       active: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int,
                       dense: bool | None = None) -> torch.Tensor:
    """The drawn rounds ((n, N) each), then grey on uncovered pixels and on the Cutout box at
    (cy, cx): per image what :func:`.randaugment.apply_draws` and :func:`.randaugment.cutout` do."""
    op, level, mag, code = _prepare(op, level, sign, active)
    hole = None
    for r in range(len(op)):
        x, hole = _round(x, op[r], level[r], mag[r], code[r], x.is_cuda if dense is None else dense, hole)
    return cutout_batch(x, size, cy, cx, hole)


def rand_augment_batch(x: torch.Tensor, gen: torch.Generator, n: int = 2, m: int = MAGNITUDE,
                       with_ops: bool = True, with_cutout: bool = True, rows: Rows | None = None) -> torch.Tensor:
    """``n`` RandAugmentMC rounds, then an always-on Cutout of :func:`.randaugment.cutout_size` (uint8);
    the Cutout centre is uniform over the pixels, row then column (official ``cutout_numpy``).

    ``with_ops=False`` / ``with_cutout=False`` leave that part out (the official Cutout
    ablations); a part left out draws nothing from ``gen``, as on the PIL path. ``x`` may be
    ``rows`` of a bigger batch: every draw is made for all of it (see :class:`.base.Rows`)."""
    h, w = x.shape[-2:]
    rows = rows or Rows.all(len(x))
    draws = tuple(rows.of(t, 1) for t in draw_ops(rows.total, gen, x.device, n, m)) if with_ops else None
    if with_cutout:
        cy = rows.of(torch.randint(0, h, (rows.total,), generator=gen, device=x.device))
        cx = rows.of(torch.randint(0, w, (rows.total,), generator=gen, device=x.device))
        size = cutout_size(h, w)
    else:  # a box of size 0 covers nothing; the pixels ops left uncovered still turn grey
        cy = cx = torch.zeros(len(x), dtype=torch.long, device=x.device)
        size = 0
    if draws is None:
        return cutout_batch(x, size, cy, cx) if with_cutout else x
    return rand_augment_drawn(x, *draws, cy, cx, size)


class RandAugment(Policy):
    """RandAugmentMC + Cutout as the paper's RA variant: the PIL reference per image, the batched
    ops per batch (equal under the same draws, within the tolerances the tests state)."""

    name = "randaugment"

    def strong_image(self, img, rng):
        return rand_augment_mc(img, rng, with_ops=self.with_ops, with_cutout=self.with_cutout)

    def strong_batch(self, x: torch.Tensor, gen: torch.Generator, rows: Rows | None = None) -> torch.Tensor:
        return rand_augment_batch(x, gen, with_ops=self.with_ops, with_cutout=self.with_cutout, rows=rows)

