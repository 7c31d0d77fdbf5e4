"""A strong augmentation as a fixmatch_ray policy plugin: invert the colours of half the images
(a coin per image), then grey out a square of half the side centred anywhere (clipped at the
border), on both backends: per image on PIL, per batch on uint8 tensors."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from fixmatch_ray.data.policies.base import Policy, Rows

GREY = 128


class Invert(Policy):
    name = "invert"
    backends = frozenset({"pil", "tensor"})

    def strong_image(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        x = np.array(img)
        if self.with_ops and rng.random() < 0.5:
            x = 255 - x
        if self.with_cutout:
            h, w = x.shape[:2]
            cy, cx, r = int(rng.integers(0, h)), int(rng.integers(0, w)), w // 4
            x[max(0, cy - r):cy + r, max(0, cx - r):cx + r] = GREY
        return Image.fromarray(x)

    def strong_batch(self, x: torch.Tensor, gen: torch.Generator, rows: Rows | None = None) -> torch.Tensor:
        rows = rows or Rows.all(len(x))  # draws for the whole batch, applied to these rows
        n, h, w, dev = rows.total, x.shape[-2], x.shape[-1], x.device
        if self.with_ops:
            coin = rows.of(torch.rand(n, generator=gen, device=dev) < 0.5).view(-1, 1, 1, 1)
            x = torch.where(coin, 255 - x, x)
        if self.with_cutout:
            cy = rows.of(torch.randint(0, h, (n,), generator=gen, device=dev)).view(-1, 1, 1, 1)
            cx = rows.of(torch.randint(0, w, (n,), generator=gen, device=dev)).view(-1, 1, 1, 1)
            r = w // 4
            ys, xs = torch.arange(h, device=dev).view(1, 1, -1, 1), torch.arange(w, device=dev).view(1, 1, 1, -1)
            box = (ys >= cy - r) & (ys < cy + r) & (xs >= cx - r) & (xs < cx + r)
            x = torch.where(box, torch.full_like(x, GREY), x)
        return x
