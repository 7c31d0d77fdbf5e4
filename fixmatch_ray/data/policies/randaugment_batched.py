"""RandAugmentMC and Cutout on a whole uint8 batch (N, C, H, W), each sample its own draws.

The same ops, levels and probabilities as the PIL reference in :mod:`.randaugment`
(the oracle the tests compare against). torchvision v2 and kornia draw one op set per batch,
which is not RandAugmentMC. How it stays cheap (each point replaced a slower formulation,
measured with ``python -m fixmatch_ray.bench aug``):

- geometric ops (Rotate, Shear, Translate) depend only on (op, level, sign): their source-pixel
  maps are tabulated once per image size, so applying one is a table lookup and one gather
  from the image with a black pixel appended.
- AutoContrast, Brightness, Contrast, Equalize, Posterize, Solarize are per-sample, per-channel
  256-entry lookup tables, applied with one gather: Brightness, Posterize and Solarize (and
  Contrast given the image's mean gray) are tabulated per level; AutoContrast and Equalize are
  built from the image's channel range and histogram.
- Color and Sharpness blend in float on their own samples.
- no bool masks or ``where`` over whole images on the CPU, where they are slow; Cutout's masks
  come from a table and it is uint8 arithmetic.
- the official ops run on an RGBA image (see :mod:`.randaugment`): here geometric ops
  fill black and a per-pixel ``hole`` map (uint8, N × H·W) stands for the alpha channel. It is
  moved by later geometric ops, cleared by the ops that convert to RGB, and turned grey with
  the Cutout box in one uint8 multiply-add at the end.

On CUDA every part runs on the whole batch (an op that is not the sample's is the identity):
static shapes and no host synchronisation. On the CPU the samples of a round are sorted by op
and each part runs only on its slice; the results are identical (tested).
"""
from __future__ import annotations

import functools
import itertools

import torch

from .randaugment import CONVERTING_OPS, CUTOUT_FILL, FILL, GEOMETRIC_OPS, MAX_LEVEL, OP_NAMES, magnitude

OP = {name: i for i, name in enumerate(OP_NAMES)}
GEOMETRIC = tuple(n for n in OP_NAMES if n in GEOMETRIC_OPS)  # the reference's set, in OP_NAMES order
LUT_OPS = ("AutoContrast", "Brightness", "Contrast", "Equalize", "Posterize", "Solarize")
# Which part of a round handles each op: 0 geometric, 1 lookup table, 2 Color, 3 Sharpness, 4 none.
PART = tuple(0 if n in GEOMETRIC else 1 if n in LUT_OPS else 2 if n == "Color" else 3 if n == "Sharpness" else 4
             for n in OP_NAMES)
LEVELS = MAX_LEVEL + 1  # table rows per op: levels 0..9 (0 is never drawn)
assert CUTOUT_FILL == FILL  # one grey for Cutout and uncovered pixels: one multiply-add does both


@functools.lru_cache(maxsize=None)
def _magnitudes(device: torch.device) -> torch.Tensor:
    """(14, 10) table: magnitude(op, level) for levels 0..9 (0 and parameterless ops: 0)."""
    table = [[0.0] + [float(magnitude(n, v) or 0.0) for v in range(1, LEVELS)] for n in OP_NAMES]
    return torch.tensor(table, dtype=torch.float64, device=device)


@functools.lru_cache(maxsize=None)
def _parts(device: torch.device) -> torch.Tensor:
    return torch.tensor(PART, device=device)


@functools.lru_cache(maxsize=None)
def _keeps_hole(device: torch.device) -> torch.Tensor:
    """(14,) uint8: 0 for the ops after which the official image is opaque (``convert('RGB')``)."""
    return torch.tensor([0 if n in CONVERTING_OPS else 1 for n in OP_NAMES], dtype=torch.uint8, device=device)


def _affine_coeffs(op: torch.Tensor, mag: torch.Tensor, sign: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 6) PIL AFFINE coefficients per (op, magnitude, sign): the identity for non-geometric ops."""
    h, w = size
    s = sign.to(torch.float64) * mag
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    rad = -torch.deg2rad(s)
    cos, sin = torch.round(torch.cos(rad) * 1e15) / 1e15, torch.round(torch.sin(rad) * 1e15) / 1e15
    cand = {
        "Rotate": torch.stack([cos, sin, cos * (-w / 2) + sin * (-h / 2) + w / 2,
                               -sin, cos, -sin * (-w / 2) + cos * (-h / 2) + h / 2], 1),
        "ShearX": torch.stack([one, s, zero, zero, one, zero], 1),
        "ShearY": torch.stack([one, zero, zero, s, one, zero], 1),
        "TranslateX": torch.stack([one, zero, sign * mag, zero, one, zero], 1),  # mag: pixels
        "TranslateY": torch.stack([one, zero, zero, zero, one, sign * mag], 1),
    }
    out = torch.stack([one, zero, zero, zero, one, zero], 1)
    for name, coeffs in cand.items():
        out = torch.where((op == OP[name]).unsqueeze(1), coeffs, out)
    return out


@functools.lru_cache(maxsize=None)
def _geometry_table(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(codes, H·W) source pixel of every output pixel, for every (op, level, sign); ``H·W``
    (the appended black, transparent pixel) where the source falls outside the image.

    PIL's AFFINE with NEAREST: input pixel = floor(M @ (x+.5, y+.5, 1)). PIL accumulates the
    coordinates incrementally in C, so at exact half-pixel ties (some shear/rotate magnitudes)
    a few percent of pixels pick the neighbouring source pixel (stated tolerance in the tests).
    """
    n_codes = len(OP_NAMES) * LEVELS * 2
    code = torch.arange(n_codes)
    op, level, sign = code // (2 * LEVELS), (code // 2) % LEVELS, code % 2 * 2 - 1
    mags = _magnitudes(torch.device("cpu"))[op, level]
    m = _affine_coeffs(op, mags, sign, (h, w)).view(n_codes, 6, 1, 1)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    xin = torch.floor(m[:, 0] * xs + m[:, 1] * ys + m[:, 2])
    yin = torch.floor(m[:, 3] * xs + m[:, 4] * ys + m[:, 5])
    valid = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    src = torch.where(valid, yin * w + xin, float(h * w)).long().view(n_codes, h * w)
    return src.to(device)


def _geometric(x: torch.Tensor, code: torch.Tensor, hole: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate/Shear/Translate by table: one gather from the image with a black pixel appended
    (PIL's fill when none is given). Also the ``hole`` map (uint8 N × H·W, 1 = transparent)
    after the op: the old one moved along (None: nothing transparent yet) plus the uncovered pixels."""
    n, c, h, w = x.shape
    src = torch.cat([x.reshape(n, c, h * w), x.new_zeros(n, c, 1)], 2)
    idx = _geometry_table(h, w, x.device).index_select(0, code)
    out = src.gather(2, idx.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
    if hole is None:
        return out, (idx == h * w).to(torch.uint8)
    return out, torch.cat([hole, hole.new_ones(n, 1)], 1).gather(1, idx)


@functools.lru_cache(maxsize=None)
def _gray_weights(device: torch.device) -> torch.Tensor:
    return torch.tensor((19595.0, 38470.0, 7471.0), device=device).view(1, 3, 1, 1)


def _gray(xf: torch.Tensor) -> torch.Tensor:
    """PIL's RGB→L, (R·19595 + G·38470 + B·7471 + 0x8000) >> 16, of float pixel values
    (exact in float32: the sum stays below 2^24); float (N, 1, H, W)."""
    wts = _gray_weights(xf.device)
    return torch.floor(((xf * wts).sum(1, keepdim=True) + 0x8000) * (1.0 / 65536))


def _blend(deg: torch.Tensor, img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """PIL's Image.blend(deg, img, f) in float32: truncate(deg + f·(img − deg)), clipped to 0..255."""
    return ((img - deg) * f).add_(deg).trunc_().clamp_(0, 255)


STATS_LUT_OPS = ("AutoContrast", "Contrast", "Equalize")  # tables that depend on the image, not only the level


def _static_lut(name: str, mag: torch.Tensor) -> torch.Tensor:
    """(N, 256) table of Brightness, Posterize or Solarize (which depend on the level only), in
    PIL's arithmetic (float32 blend, integer masks); the identity for any other op."""
    v = torch.arange(256, dtype=torch.float32).view(1, 256)
    f = mag.float().view(-1, 1)
    if name == "Brightness":
        return _blend(torch.zeros_like(v), v, f)
    if name == "Posterize":
        return (v.long() & ((0xFF << (8 - mag.long().clamp(1, 8))) & 0xFF).view(-1, 1)).float()
    if name == "Solarize":
        return torch.where(v >= f, 255.0 - v, v)
    return v.expand(len(mag), 256)


@functools.lru_cache(maxsize=None)
def _static_luts(device: torch.device) -> torch.Tensor:
    """(14·10, 256) uint8: row op·10 + level is the table of a level-only op, the identity for
    every other op (stats ops start from it)."""
    rows = []
    mags = _magnitudes(torch.device("cpu"))
    for i, name in enumerate(OP_NAMES):
        rows.append(_static_lut(name, mags[i]))
    return torch.cat(rows).clamp(0, 255).to(torch.uint8).to(device)


@functools.lru_cache(maxsize=None)
def _contrast_luts(device: torch.device) -> torch.Tensor:
    """(10·256, 256) uint8: row level·256 + mean is Contrast's blend with a gray of that mean."""
    v = torch.arange(256, dtype=torch.float32).view(1, 1, 256)
    f = _magnitudes(torch.device("cpu"))[OP["Contrast"]].float().view(-1, 1, 1)
    mean = torch.arange(256, dtype=torch.float32).view(1, 256, 1)
    return _blend(mean, v, f).to(torch.uint8).view(-1, 256).to(device)


def _stats_lut(name: str, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """(N, C, 256) uint8 table of op ``name`` from each image of ``x`` (uint8 N, C, H, W)."""
    n, c, h, w = x.shape
    if name == "Contrast":
        mean = torch.floor(_gray(x.float()).mean(dim=(1, 2, 3)) + 0.5).long()
        return _contrast_luts(x.device).index_select(0, level * 256 + mean).unsqueeze(1).expand(n, c, 256)
    v = torch.arange(256, device=x.device, dtype=torch.float32).view(1, 1, 256)
    if name == "AutoContrast":
        lo, hi = torch.aminmax(x.view(n, c, h * w), dim=2, keepdim=True)
        scale = 255.0 / (hi - lo).clamp(min=1).double()
        out = torch.trunc(v.double() * scale + -lo.double() * scale).clamp(0, 255).float()
        return torch.where(hi > lo, out, v).to(torch.uint8)
    if name == "Equalize":
        flat = x.reshape(n * c, h * w).long()
        hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, flat, torch.ones_like(flat))
        last = hist.gather(1, flat.amax(1, keepdim=True))  # count of the highest value present
        step = (h * w - last) // 255
        cum = torch.cumsum(hist, 1) - hist  # sum(h[:i])
        lut = ((step // 2 + cum) // step.clamp(min=1)).clamp(max=255)  # PIL clips the LUT to 8 bits
        return torch.where(step > 0, lut, v.view(1, 256).long()).to(torch.uint8).view(n, c, 256)
    raise ValueError(f"{name} is not a lookup-table op that reads the image")


def _apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    return lut.gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


def _lookup_dense(x: torch.Tensor, op: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Every sample's lookup-table op (identity where its op is not one), whole batch."""
    n, c = x.shape[:2]
    lut = _static_luts(x.device).index_select(0, op * LEVELS + level).unsqueeze(1).expand(n, c, 256)
    for name in STATS_LUT_OPS:
        lut = torch.where((op == OP[name]).view(n, 1, 1), _stats_lut(name, x, level), lut)
    return _apply_lut(x, lut)


def _color(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Color: blend with the image's own gray; f = 1 is the identity."""
    xf = x.float()
    return _blend(_gray(xf), xf, f.float().view(-1, 1, 1, 1)).to(torch.uint8)


def _smooth(xf: torch.Tensor) -> torch.Tensor:
    """PIL ImageFilter.SMOOTH (3×3 ones, centre 5, /13, rounded; the one-pixel border is kept),
    as exact integer sums in float: (S/13 + 0.5) is never within rounding error of a tie."""
    rows = xf[:, :, :-2] + xf[:, :, 1:-1] + xf[:, :, 2:]
    s = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] + 4 * xf[:, :, 1:-1, 1:-1]
    out = xf.clone()
    out[:, :, 1:-1, 1:-1] = torch.floor(s * (1 / 13.0) + 0.5)
    return out


def _sharpness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness: blend with the smoothed image; f = 1 is the identity."""
    xf = x.float()
    return _blend(_smooth(xf), xf, f.float().view(-1, 1, 1, 1)).to(torch.uint8)


def _prepare(op: torch.Tensor, level: torch.Tensor, sign: torch.Tensor, active: torch.Tensor):
    """Per-sample (op, level, magnitude, geometry code), any shape; an inactive op is Identity."""
    op = torch.where(active, op, OP["Identity"])
    level = level.clamp(0, MAX_LEVEL)
    flat = op * LEVELS + level
    mag = _magnitudes(op.device).view(-1).index_select(0, flat.view(-1)).view(op.shape)
    return op, level, mag, flat * 2 + (sign > 0)


def apply_ops(x: torch.Tensor, op: torch.Tensor, level: torch.Tensor, sign: torch.Tensor,
              active: torch.Tensor, dense: bool | None = None) -> torch.Tensor:
    """Apply sample i's op ``OP_NAMES[op[i]]`` at ``level[i]`` where ``active[i]``; uint8 in and out.

    ``dense`` (default: on CUDA) computes each part for the whole batch, the identity for samples
    whose op it is not: static shapes, no host sync. Otherwise (the CPU, where a sync costs
    nothing and every call's overhead counts) the samples are sorted by op once, each part runs
    on its contiguous slice, and one copy puts them back. Geometric ops fill black, as PIL on RGB.
    """
    return _round(x, *_prepare(op, level, sign, active), dense=x.is_cuda if dense is None else dense)[0]


def _round(x: torch.Tensor, op: torch.Tensor, level: torch.Tensor, mag: torch.Tensor, code: torch.Tensor,
           dense: bool, hole: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One round of ops; also the ``hole`` map after it (None while nothing is transparent)."""
    if dense:
        one = torch.ones_like(mag)
        x, hole = _geometric(x, code, hole)
        x = _lookup_dense(x, op, level)
        x = _color(x, torch.where(op == OP["Color"], mag, one))
        x = _sharpness(x, torch.where(op == OP["Sharpness"], mag, one))
        return x, hole * _keeps_hole(x.device).index_select(0, op).view(-1, 1)
    n_ops = len(OP_NAMES)
    key = _parts(x.device).index_select(0, op) * n_ops + op  # part-major, then op
    perm = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=5 * n_ops).tolist()
    xs = _words(x).index_select(0, perm).view(torch.uint8).view(x.shape)
    op_s, level_s, code_s = torch.stack([op, level, code]).index_select(1, perm)
    mag_s = mag.index_select(0, perm)
    bounds = [0, *itertools.accumulate(counts)]
    part = lambda p: slice(bounds[p * n_ops], bounds[(p + 1) * n_ops])  # noqa: E731
    g, lk, co, sh = part(0), part(1), part(2), part(3)
    hs = None if hole is None else _words(hole).index_select(0, perm).view(torch.uint8).view(hole.shape)
    if g.stop > g.start:
        xs[g], moved = _geometric(xs[g], code_s[g], None if hs is None else hs[g])
        hs = moved.new_zeros(len(x), moved.shape[1]) if hs is None else hs
        hs[g] = moved
    if lk.stop > lk.start:
        rows = _static_luts(x.device).index_select(0, op_s[lk] * LEVELS + level_s[lk])
        lut = rows.unsqueeze(1).repeat(1, x.shape[1], 1)
        for name in STATS_LUT_OPS:
            a, b = bounds[n_ops + OP[name]], bounds[n_ops + OP[name] + 1]
            if b > a:
                lut[a - lk.start:b - lk.start] = _stats_lut(name, xs[a:b], level_s[a:b])
        xs[lk] = _apply_lut(xs[lk], lut)
    if co.stop > co.start:
        xs[co] = _color(xs[co], mag_s[co])
    if sh.stop > sh.start:
        xs[sh] = _sharpness(xs[sh], mag_s[sh])
    inverse = torch.empty_like(perm).scatter_(0, perm, torch.arange(len(perm), device=x.device))
    if hs is not None:
        for name in CONVERTING_OPS:  # the official image is opaque again after these
            hs[bounds[n_ops + OP[name]]:bounds[n_ops + OP[name] + 1]] = 0
        hs = _words(hs).index_select(0, inverse).view(torch.uint8).view(hs.shape)
    return _words(xs).index_select(0, inverse).view(torch.uint8).view(x.shape), hs


def _words(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, ...) as (N, bytes/8) int64 when it divides: sample copies move 8 bytes at a time."""
    flat = x.reshape(len(x), -1)
    return flat.view(torch.int64) if flat.shape[1] % 8 == 0 else flat


@functools.lru_cache(maxsize=None)
def _cutout_table(h: int, w: int, size: int, device: torch.device) -> torch.Tensor:
    """(H·W, H·W) uint8, row cy·W + cx: 1 inside :func:`.randaugment.cutout_box` centred at (cy, cx)."""
    half = size // 2
    cy, cx = torch.arange(h).view(h, 1, 1, 1), torch.arange(w).view(1, w, 1, 1)
    rows, cols = torch.arange(h).view(1, 1, h, 1), torch.arange(w).view(1, 1, 1, w)
    inside = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
    return inside.view(h * w, h * w).to(torch.uint8).to(device)


def cutout_batch(x: torch.Tensor, size: int, cy: torch.Tensor, cx: torch.Tensor,
                 hole: torch.Tensor | None = None) -> torch.Tensor:
    """Grey Cutout box per sample, centred at pixel (cy, cx) and clipped (as the PIL path), and
    grey wherever ``hole`` (uint8 N × H·W) marks a pixel still transparent: x·keep + FILL·(1 − keep)."""
    n, _, h, w = x.shape
    grey = _cutout_table(h, w, size, x.device).index_select(0, cy * w + cx)
    if hole is not None:
        grey = grey | hole
    grey = grey.view(n, 1, h, w)
    return (x * (1 - grey)).add_(grey * FILL[0])
