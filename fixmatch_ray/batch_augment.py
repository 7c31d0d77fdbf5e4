"""FixMatch augmentation of a whole batch at once, on the training device, per-sample random.

The same ops, levels and probabilities as the PIL reference in :mod:`fixmatch_ray.augment`
(the oracle the tests compare against), on float tensors holding uint8 pixel values. Every op
is computed for the whole batch and selected per sample with ``torch.where``: static shapes and
no host synchronisation, so it runs unchanged on CPU and CUDA. torchvision v2 and kornia draw one
op set per batch, which is not RandAugmentMC.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment import CUTOUT_FILL, FILL, MAX_LEVEL, OP_NAMES, magnitude

OP = {name: i for i, name in enumerate(OP_NAMES)}
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0  # PIL ImageFilter.SMOOTH


def _magnitudes(device: torch.device) -> torch.Tensor:
    """(14, 11) table: magnitude(op, level) for levels 0..10 (0 and parameterless ops: 0)."""
    table = [[0.0] + [float(magnitude(n, v) or 0.0) for v in range(1, MAX_LEVEL + 1)] for n in OP_NAMES]
    return torch.tensor(table, dtype=torch.float64, device=device)


def _affine(x: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """PIL's AFFINE transform with NEAREST: input pixel = floor(M @ (x+.5, y+.5, 1)); outside →
    FILL. PIL accumulates the coordinates incrementally in C, so at exact half-pixel ties (some
    shear/rotate magnitudes) a few percent of pixels pick the neighbouring source pixel."""
    n, c, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float64) + 0.5,
                            torch.arange(w, device=x.device, dtype=torch.float64) + 0.5, indexing="ij")
    m = mats.to(torch.float64).view(n, 6, 1, 1)
    xin = torch.floor(m[:, 0] * xs + m[:, 1] * ys + m[:, 2])
    yin = torch.floor(m[:, 3] * xs + m[:, 4] * ys + m[:, 5])
    valid = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    idx = (yin.clamp(0, h - 1) * w + xin.clamp(0, w - 1)).long().view(n, 1, h * w).expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, idx).view(n, c, h, w)
    return torch.where(valid.unsqueeze(1), out, torch.tensor(float(FILL[0]), device=x.device))


def _geometry(op: torch.Tensor, mag: torch.Tensor, sign: torch.Tensor, on: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 6) affine coefficients per sample: the identity unless a geometric op is on."""
    h, w = size
    s = sign.to(torch.float64) * mag
    ident = torch.tensor([1.0, 0, 0, 0, 1.0, 0], dtype=torch.float64, device=op.device).expand(len(op), 6)
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    rad = -torch.deg2rad(s)
    cos, sin = torch.round(torch.cos(rad) * 1e15) / 1e15, torch.round(torch.sin(rad) * 1e15) / 1e15
    rot = torch.stack([cos, sin, cos * (-w / 2) + sin * (-h / 2) + w / 2,
                       -sin, cos, -sin * (-w / 2) + cos * (-h / 2) + h / 2], 1)
    px_x, px_y = sign * torch.floor(mag * w), sign * torch.floor(mag * h)
    cand = {
        "Rotate": rot,
        "ShearX": torch.stack([one, s, zero, zero, one, zero], 1),
        "ShearY": torch.stack([one, zero, zero, s, one, zero], 1),
        "TranslateX": torch.stack([one, zero, px_x, zero, one, zero], 1),
        "TranslateY": torch.stack([one, zero, zero, zero, one, px_y], 1),
    }
    out = ident
    for name, coeffs in cand.items():
        out = torch.where(((op == OP[name]) & on).unsqueeze(1), coeffs, out)
    return out


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB→L: (R·19595 + G·38470 + B·7471 + 0x8000) >> 16, as (N, 1, H, W)."""
    xi = x.to(torch.int32)
    return ((xi[:, 0] * 19595 + xi[:, 1] * 38470 + xi[:, 2] * 7471 + 0x8000) >> 16).unsqueeze(1).float()


def _blend(deg: torch.Tensor, img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """PIL's Image.blend(deg, img, f): truncate(deg + f·(img − deg)), clipped to 0..255."""
    f = f.float().view(-1, 1, 1, 1)
    return torch.trunc(deg + f * (img - deg)).clamp(0, 255)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL ImageFilter.SMOOTH: 3x3 kernel /13, rounded; the one-pixel border is kept."""
    k = _SMOOTH.to(x.device, x.dtype).expand(3, 1, 3, 3)
    inner = torch.floor(F.conv2d(x, k, groups=3) + 0.5).clamp(0, 255)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp(min=1).double()
    offset = -lo.double() * scale
    scaled = x.double() * scale  # kept apart from the add: PIL rounds the product, then adds
    out = torch.trunc(scaled + offset).clamp(0, 255).float()
    return torch.where(hi > lo, out, x)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, flat, torch.ones_like(flat))
    last = hist.gather(1, flat.amax(1, keepdim=True))  # count of the highest value present
    step = (h * w - last) // 255
    cum = torch.cumsum(hist, 1) - hist  # sum(h[:i])
    lut = (step // 2 + cum) // step.clamp(min=1)
    out = lut.gather(1, flat).view(n, c, h, w).clamp(max=255).float()  # PIL clips the LUT to 8 bits
    return torch.where((step > 0).view(n, c, 1, 1), out, x)


def apply_ops(x: torch.Tensor, op: torch.Tensor, level: torch.Tensor, sign: torch.Tensor,
              active: torch.Tensor) -> torch.Tensor:
    """Apply sample i's op ``OP_NAMES[op[i]]`` at ``level[i]`` where ``active[i]`` (PIL-exact ops).

    On CUDA every op is computed for the whole batch and selected with ``torch.where`` (static
    shapes, no host sync). On the CPU, where a sync costs nothing and arithmetic is the cost,
    each op runs only on the samples that drew it; the results are identical.
    """
    if x.is_cuda:
        return _apply_dense(x, op, level, sign, active)
    out = x.clone()
    groups = [GEOMETRIC, *((n,) for n in OP_NAMES if n not in GEOMETRIC and n != "Identity")]
    for names in groups:
        sel = torch.zeros_like(active)
        for name in names:
            sel |= op == OP[name]
        idx = torch.nonzero(sel & active).flatten()
        if len(idx):
            out[idx] = _apply_dense(x[idx], op[idx], level[idx], sign[idx], active[idx], names)
    return out


def _apply_dense(x: torch.Tensor, op: torch.Tensor, level: torch.Tensor, sign: torch.Tensor,
                 active: torch.Tensor, only: tuple[str, ...] = OP_NAMES) -> torch.Tensor:
    mag = _magnitudes(x.device)[op, level.clamp(0, MAX_LEVEL)]
    is_op = lambda name: ((op == OP[name]) & active).view(-1, 1, 1, 1)  # noqa: E731
    out = x
    if any(n in only for n in GEOMETRIC):
        out = _affine(x, _geometry(op, mag, sign, active, x.shape[-2:]))
    f = mag.float()
    if "Color" in only or "Contrast" in only:
        gray = _gray(out)
    degenerate = {
        "Brightness": lambda: torch.zeros_like(out),
        "Color": lambda: gray.expand_as(out),
        "Contrast": lambda: torch.floor(gray.mean(dim=(2, 3), keepdim=True) + 0.5).expand_as(out),
        "Sharpness": lambda: _smooth(out),
    }
    for name, deg in degenerate.items():
        if name in only:
            out = torch.where(is_op(name), _blend(deg(), out, f), out)
    if "AutoContrast" in only:
        out = torch.where(is_op("AutoContrast"), _autocontrast(out), out)
    if "Equalize" in only:
        out = torch.where(is_op("Equalize"), _equalize(out), out)
    if "Posterize" in only:
        mask = ((0xFF << (8 - mag.long().clamp(1, 8))) & 0xFF).view(-1, 1, 1, 1)
        out = torch.where(is_op("Posterize"), (out.long() & mask).float(), out)
    if "Solarize" in only:
        out = torch.where(is_op("Solarize") & (out >= mag.view(-1, 1, 1, 1).float()), 255.0 - out, out)
    return out


def cutout_batch(x: torch.Tensor, size: int, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """Gray square per sample: box [int(max(0, c − size/2)), min(W, that + size)), as the PIL path."""
    n, _, h, w = x.shape
    x0 = torch.clamp(cx - size / 2, min=0).floor()
    y0 = torch.clamp(cy - size / 2, min=0).floor()
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    inside = ((xs >= x0.view(n, 1, 1)) & (xs < (x0 + size).clamp(max=w).view(n, 1, 1))
              & (ys >= y0.view(n, 1, 1)) & (ys < (y0 + size).clamp(max=h).view(n, 1, 1)))
    return torch.where(inside.unsqueeze(1), torch.tensor(float(CUTOUT_FILL[0]), device=x.device), x)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Source index of padded index ``i`` (already shifted by −pad) under reflect padding."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def weak_batch(x: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """Flip with p=0.5 (if allowed), reflect-pad by 1/8 of the side, random crop back.

    One gather from the unpadded image does all three: each output pixel's source row/column is
    computed through the reflect padding (and the mirror, for flipped samples). Keeps the dtype.
    """
    n, c, h, w = x.shape
    pad = int(0.125 * w)
    coin = (torch.rand(n, generator=gen, device=x.device) < 0.5) if flip else None
    top = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
    rows = _reflect(top.view(n, 1) + torch.arange(h, device=x.device) - pad, h)
    cols = _reflect(left.view(n, 1) + torch.arange(w, device=x.device) - pad, w)
    if coin is not None:  # padding the mirrored image = mirroring the padded one
        cols = torch.where(coin.view(n, 1), w - 1 - cols, cols)
    idx = (rows.view(n, h, 1) * w + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, idx).view(n, c, h, w)


def draw_ops(n_images: int, gen: torch.Generator, device: torch.device, n: int = 2, m: int = MAX_LEVEL):
    """RandAugmentMC's choices, (n, N) each: op uniform over 14 (with replacement), level 1..m,
    sign ±1, active with p = 0.5."""
    op = torch.randint(0, len(OP_NAMES), (n, n_images), generator=gen, device=device)
    level = torch.randint(1, m + 1, (n, n_images), generator=gen, device=device)
    sign = torch.randint(0, 2, (n, n_images), generator=gen, device=device) * 2 - 1
    active = torch.rand(n, n_images, generator=gen, device=device) < 0.5
    return op, level, sign, active


def strong_batch(x: torch.Tensor, gen: torch.Generator, flip: bool, n: int = 2, m: int = MAX_LEVEL,
                 cutout_frac: float = 0.5) -> torch.Tensor:
    """weak, then ``n`` RandAugmentMC rounds, then an always-on Cutout of ``cutout_frac`` of the side."""
    x = weak_batch(x, gen, flip)
    op, level, sign, active = draw_ops(len(x), gen, x.device, n, m)
    for r in range(n):
        x = apply_ops(x, op[r], level[r], sign[r], active[r])
    h, w = x.shape[-2:]
    cx = torch.rand(len(x), generator=gen, device=x.device) * w
    cy = torch.rand(len(x), generator=gen, device=x.device) * h
    return cutout_batch(x, int(cutout_frac * w), cx, cy)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x/255 − mean)/std`` per channel, as one multiply-subtract."""
    scale = torch.tensor([1 / (255.0 * s) for s in std], device=x.device).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=x.device).view(1, 3, 1, 1)
    return torch.addcmul(-shift, x.float(), scale)


class BatchAugmenter:
    """uint8 (N, 3, H, W) on any device → normalised float32 weak or strong views."""

    def __init__(self, mean, std, flip: bool):
        self.mean, self.std, self.flip = tuple(mean), tuple(std), flip

    def __call__(self, x_u8: torch.Tensor, gen: torch.Generator, strong: bool) -> torch.Tensor:
        x = strong_batch(x_u8.float(), gen, self.flip) if strong else weak_batch(x_u8, gen, self.flip)
        return normalize(x, self.mean, self.std)
