"""CTAugment's 19 ops on a uint8 batch (N, C, H, W), every sample its own op and parameter values.

The arithmetic is PIL's own (Pillow's C code, read for this), so the ops equal the per-image
reference :mod:`.ctaugment` bit for bit (tested op by op):

- lookup tables (autocontrast, brightness, contrast, equalize, invert, posterize, solarize; identity
  and translate are the identity table): a per-sample, per-channel 256-entry table, one gather.
  ``Image.blend(a, b, α)`` is ``trunc(a + float32(α)·(b − a))`` in float32, clipped.
- blends with a filtered image (blur, color, sharpness, smooth): float32 on whole images.
- geometry (rotate, shear_x/y): PIL's NEAREST affine runs in 16.16 fixed point
  (``affine_fixed`` in Geometry.c): source x = (FIX(a2 + a0/2 + a1/2) + y·FIX(a1) + x·FIX(a0)) >> 16
  with FIX(v) = floor(65536·v + 0.5). That is integer arithmetic, reproduced exactly; rotate's
  whole-degree angles are tabulated, shear's continuous parameter is computed per sample.
- rescale: PIL's crop and two-pass resize as two batched matmuls (:mod:`.ctaugment_resample`).
- cutout: a gray box per sample.

Bit-exact in eager mode: a compiler that contracts the float32 blend a + f·(b − a) into an FMA
(as Triton may under torch.compile) could move a truncation by one level.

``apply_round`` runs one op per sample. ``dense`` (default on CUDA) runs every part on the whole
batch, the identity for samples whose op it is not: static shapes, no host sync. Otherwise (CPU)
samples are sorted by op, each part runs on its own slice, and one copy puts them back.
"""
from __future__ import annotations

import functools
import itertools
import math

import torch

from .randaugment_batched import _apply_lut, _blend, _gray, _smooth, _words
from .ctaugment import CUTOUT_FILL, OP_NAMES
from .ctaugment_resample import rescale_batch

OP = {name: i for i, name in enumerate(OP_NAMES)}
GEOMETRIC = ("rotate", "shear_x", "shear_y")
LUT_OPS = ("autocontrast", "brightness", "contrast", "equalize", "invert", "posterize", "solarize")
BLEND_OPS = ("blur", "color", "sharpness", "smooth")
# Part of a round per op: 0 geometric, 1 lookup table, 2 blend, 3 rescale, 4 cutout, 5 nothing
# (identity, and translate: (2d−1)·0.3 px under NEAREST moves no pixel, see ctaugment.translate).
PART = tuple(0 if n in GEOMETRIC else 1 if n in LUT_OPS else 2 if n in BLEND_OPS else 3 if n == "rescale"
             else 4 if n == "cutout" else 5 for n in OP_NAMES)
N_PARTS = 6


def _fix(v: torch.Tensor | float):
    """Pillow's 16.16 FIX(v) = floor(v·65536 + 0.5), of a float64 tensor or a Python float."""
    if isinstance(v, torch.Tensor):
        return torch.floor(v * 65536.0 + 0.5).long()
    return math.floor(v * 65536.0 + 0.5)


def _affine_src(a: list, h: int, w: int, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Source pixel (y·W + x, or H·W for the black fill) of PIL's fixed-point NEAREST affine;
    ``a`` holds six int64 (N, 1) or int entries: FIX of the coefficients as Pillow's affine_fixed."""
    a0, a1, a2, a3, a4, a5 = a
    xin = (a2 + ys * a1 + xs * a0) >> 16
    yin = (a5 + ys * a4 + xs * a3) >> 16
    valid = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    return torch.where(valid, yin * w + xin, h * w)


def _grid(h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return xs.reshape(1, -1), ys.reshape(1, -1)


@functools.lru_cache(maxsize=None)
def _rotate_table(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(91, H·W) source pixels of ``img.rotate(k)`` for k = −45..45, PIL's matrix to the last bit."""
    xs, ys = _grid(h, w, torch.device("cpu"))
    rows = []
    for k in range(-45, 46):
        angle = k % 360.0
        if angle == 0:  # PIL returns a copy
            rows.append((ys * w + xs).view(-1))
            continue
        rad = -math.radians(angle)
        m = [round(math.cos(rad), 15), round(math.sin(rad), 15), 0.0,
             round(-math.sin(rad), 15), round(math.cos(rad), 15), 0.0]
        cx, cy = w / 2, h / 2
        m[2], m[5] = m[0] * -cx + m[1] * -cy + m[2], m[3] * -cx + m[4] * -cy + m[5]
        m[2] += cx
        m[5] += cy
        fixed = [_fix(m[0]), _fix(m[1]), _fix(m[2] + m[0] * 0.5 + m[1] * 0.5),
                 _fix(m[3]), _fix(m[4]), _fix(m[5] + m[3] * 0.5 + m[4] * 0.5)]
        rows.append(_affine_src(fixed, h, w, xs, ys).view(-1))
    return torch.stack(rows).to(device)


def _geometric_src_for(name: str, v: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, H·W) source pixel per sample of op ``name`` (rotate by table, shear computed per row:
    the x·65536 term never changes the fraction, so the shift >> 16 is taken once per row)."""
    if name == "rotate":
        angle = torch.round((2 * v - 1) * 45).long()  # np.round: half to even, as torch.round
        return _rotate_table(h, w, v.device).index_select(0, angle.clamp(-45, 45) + 45)
    s = ((2 * v - 1) * 0.3).view(-1, 1, 1)
    rows, cols = torch.arange(h, device=v.device).view(1, h, 1), torch.arange(w, device=v.device).view(1, 1, w)
    if name == "shear_x":  # coefficients (1, s, 0, 0, 1, 0): a2 = FIX(0 + 0.5 + s·0.5), a5 = FIX(0.5)
        xin, yin = ((_fix(0.5 + s * 0.5) + rows * _fix(s)) >> 16) + cols, rows
    else:  # shear_y, (1, 0, 0, s, 1, 0): a2 = FIX(0.5), a5 = FIX(0 + s·0.5 + 0.5)
        xin, yin = cols, ((_fix(s * 0.5 + 0.5) + cols * _fix(s)) >> 16) + rows
    valid = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    return torch.where(valid, yin * w + xin, h * w).view(-1, h * w)


def _gather_src(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """out[i, :, p] = x[i, :, src[i, p]], index H·W being the black fill."""
    n, c, h, w = x.shape
    flat = torch.cat([x.reshape(n, c, h * w), torch.zeros((n, c, 1), dtype=x.dtype, device=x.device)], 2)
    return flat.gather(2, src.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)


def _geometric_dense(x: torch.Tensor, op: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    xs, ys = _grid(h, w, x.device)
    src = (ys * w + xs).expand(len(x), h * w)
    for name in GEOMETRIC:
        src = torch.where((op == OP[name]).view(-1, 1), _geometric_src_for(name, v, h, w), src)
    return _gather_src(x, src)


# ---- lookup-table ops ---------------------------------------------------------------------------

def _autocontrast_lut(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast (cutoff 0): int(v·scale + (−lo)·scale), scale = 255/(hi − lo), in
    float64 as Python computes it, clipped; the identity where the channel is flat."""
    n, c, h, w = x.shape
    lo, hi = torch.aminmax(x.view(n, c, h * w), dim=2, keepdim=True)
    lo, hi = lo.double(), hi.double()
    v = torch.arange(256, dtype=torch.float64, device=x.device).view(1, 1, 256)
    diff = (hi - lo).clamp(min=1)
    scale = torch.full_like(diff, 255.0) / diff  # not 255.0 / diff: torch computes that as 255·(1/diff)
    out = torch.trunc(v * scale + -lo * scale).clamp(0, 255)
    return torch.where(hi > lo, out, v).float()


def _equalize_lut(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize per channel: step = (pixels − count of the top value) // 255,
    lut[i] = (step//2 + Σ h[:i]) // step, identity where step is 0."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, flat, torch.ones_like(flat))
    step = (h * w - hist.gather(1, flat.amax(1, keepdim=True))) // 255
    lut = (step // 2 + torch.cumsum(hist, 1) - hist) // step.clamp(min=1)
    v = torch.arange(256, device=x.device).view(1, 256)
    return torch.where(step > 0, lut.clamp(max=255), v).float().view(n, c, 256)


def _lut_for(name: str, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N, C, 256) float32 table of op ``name`` at parameter ``v`` for each image of ``x``."""
    n, c = x.shape[:2]
    lv = torch.arange(256, dtype=torch.float32, device=x.device).view(1, 1, 256)
    alpha, factor = v.float().view(n, 1, 1), (0.1 + 1.9 * v).float().view(n, 1, 1)
    if name == "autocontrast":
        out = _blend(lv, _autocontrast_lut(x), alpha)
    elif name == "equalize":
        out = _blend(lv, _equalize_lut(x), alpha)
    elif name == "invert":
        out = _blend(lv, 255 - lv, alpha)
    elif name == "brightness":
        out = _blend(torch.zeros_like(lv), lv, factor)
    elif name == "contrast":  # gray of mean int(mean(L) + 0.5), mean = sum / count in float64 as ImageStat
        total = _gray(x.float()).double().sum(dim=(1, 2, 3))  # (a true division: CUDA multiplies by 1/count
        mean = torch.floor(total / torch.full_like(total, x[0, 0].numel()) + 0.5)  # for a scalar divisor)
        mean = mean.float().view(n, 1, 1)
        out = _blend(mean, lv, factor)
    elif name == "posterize":
        bits = 1 + torch.floor(v * 7.999).long()
        out = (lv.long() & ((0xFF << (8 - bits)) & 0xFF).view(n, 1, 1)).float()
    elif name == "solarize":
        out = torch.where(lv < torch.floor(v * 255.999).float().view(n, 1, 1), lv, 255 - lv)
    else:
        raise ValueError(f"{name} is not a lookup-table op")
    return out.expand(n, c, 256)


def _luts_dense(x: torch.Tensor, op: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    n, c = x.shape[:2]
    lut = torch.arange(256, dtype=torch.float32, device=x.device).view(1, 1, 256).expand(n, c, 256)
    for name in LUT_OPS:
        lut = torch.where((op == OP[name]).view(n, 1, 1), _lut_for(name, x, v), lut)
    return lut.to(torch.uint8)


# ---- blends with a filtered image ---------------------------------------------------------------

def _blur(xf: torch.Tensor) -> torch.Tensor:
    """ImageFilter.BLUR: the 16-pixel ring of each 5×5 window / 16, rounded half up (exact in
    float32); the two-pixel border is kept, as PIL's 5×5 filter does."""
    box = lambda t, k: sum(t[..., i:t.shape[-1] - k + 1 + i] for i in range(k))  # noqa: E731
    col5 = sum(xf[:, :, i:xf.shape[2] - 4 + i] for i in range(5))
    col3 = sum(xf[:, :, 1 + i:xf.shape[2] - 3 + i] for i in range(3))
    ring = box(col5, 5) - box(col3, 3)[..., 1:-1]
    out = xf.clone()
    out[:, :, 2:-2, 2:-2] = torch.floor(ring * (1 / 16.0) + 0.5)
    return out


def _blend_weight(name: str, v: torch.Tensor) -> torch.Tensor:
    """float32 weight PIL blends with: α = v (blur, smooth), factor 0.1 + 1.9·v (color, sharpness)."""
    return (v if name in ("blur", "smooth") else 0.1 + 1.9 * v).float()


def _blend_for(name: str, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Op ``name`` (blur, color, sharpness, smooth) with float32 weight ``f`` per sample (uint8 out):
    blend(gray|smooth, x, f) for color|sharpness, blend(x, blur|smooth, f) for blur|smooth."""
    xf, f = x.float(), f.view(-1, 1, 1, 1)
    if name == "color":
        out = _blend(_gray(xf), xf, f)
    elif name == "sharpness":
        out = _blend(_smooth(xf), xf, f)
    else:
        out = _blend(xf, _blur(xf) if name == "blur" else _smooth(xf), f)
    return out.to(torch.uint8)


def _blends_dense(x: torch.Tensor, op: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    for name in BLEND_OPS:  # weight 1 (color, sharpness) or 0 (blur, smooth) is the identity
        ident = torch.full_like(v, 0.0 if name in ("blur", "smooth") else 1.0, dtype=torch.float32)
        x = _blend_for(name, x, torch.where(op == OP[name], _blend_weight(name, v), ident))
    return x


# ---- cutout -------------------------------------------------------------------------------------

def cutout_batch(x: torch.Tensor, size: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """Gray box [c − size//2, c + size//2) per sample (clipped; ``size`` ≤ 1 paints nothing), as
    :func:`.ctaugment.cutout` for integer centres ``cx``, ``cy``."""
    n, _, h, w = x.shape
    half = (size // 2).view(n, 1)
    cols, rows = torch.arange(w, device=x.device).view(1, w), torch.arange(h, device=x.device).view(1, h)
    inx = (cols >= cx.view(n, 1) - half) & (cols < cx.view(n, 1) + half)
    iny = (rows >= cy.view(n, 1) - half) & (rows < cy.view(n, 1) + half)
    inside = (iny.view(n, 1, h, 1) & inx.view(n, 1, 1, w)).to(torch.uint8)
    return (x * (1 - inside)).add_(inside * CUTOUT_FILL[0])


def cutout_size(level: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Official side 1 + int(level·min(W, H)·0.499): 16 px at 32×32, 48 px at 96×96 for level 1."""
    return 1 + torch.floor(level * min(h, w) * 0.499).long()


# ---- one round: one op per sample ---------------------------------------------------------------

def apply_round(x: torch.Tensor, op: torch.Tensor, v0: torch.Tensor, v1: torch.Tensor, cx: torch.Tensor,
                cy: torch.Tensor, dense: bool | None = None) -> torch.Tensor:
    """Apply op ``OP_NAMES[op[i]]`` with parameters (v0[i], v1[i]) (float64; v1 only for rescale)
    to sample i of the uint8 batch ``x``; ``cx``, ``cy`` (int) centre a cutout op's box.
    ``dense`` defaults to ``x.is_cuda``; both paths give identical results (tested)."""
    if dense if dense is not None else x.is_cuda:
        return _round_dense(x, op, v0, v1, cx, cy)
    return _round_sorted(x, op, v0, v1, cx, cy)


def _round_dense(x, op, v0, v1, cx, cy) -> torch.Tensor:
    """Every part on the whole batch, the identity for the samples whose op it is not."""
    h, w = x.shape[-2:]
    x = _geometric_dense(x, op, v0)
    x = _apply_lut(x, _luts_dense(x, op, v0))
    x = _blends_dense(x, op, v0)
    is_rescale = op == OP["rescale"]
    x = rescale_batch(x, torch.where(is_rescale, v0, 0.0), torch.where(is_rescale, v1, 0.0))  # 0: no crop
    return cutout_batch(x, torch.where(op == OP["cutout"], cutout_size(v0, h, w), 0), cx, cy)


def _round_sorted(x, op, v0, v1, cx, cy) -> torch.Tensor:
    """Samples sorted by (part, op) once; each op runs on its contiguous slice; one copy back."""
    n, _, h, w = x.shape
    n_ops = len(OP_NAMES)
    key = torch.tensor(PART, device=x.device).index_select(0, op) * n_ops + op  # part-major, then op
    perm = torch.argsort(key, stable=True)
    bounds = [0, *itertools.accumulate(torch.bincount(key, minlength=N_PARTS * n_ops).tolist())]
    xs = _words(x).index_select(0, perm).view(torch.uint8).view(x.shape)
    cx, cy, v0, v1 = cx.index_select(0, perm), cy.index_select(0, perm), v0.index_select(0, perm), v1[perm]

    def of(*names: str) -> slice:  # the samples of ops ``names`` (consecutive keys)
        keys = [PART[OP[name]] * n_ops + OP[name] for name in names]
        return slice(bounds[min(keys)], bounds[max(keys) + 1])

    present = lambda names: [k for k in sorted(names, key=OP.get) if of(k).stop > of(k).start]  # noqa: E731
    if present(GEOMETRIC):
        src = [_geometric_src_for(name, v0[of(name)], h, w) for name in present(GEOMETRIC)]
        xs[of(*GEOMETRIC)] = _gather_src(xs[of(*GEOMETRIC)], torch.cat(src))
    if present(LUT_OPS):
        luts = [_lut_for(name, xs[of(name)], v0[of(name)]) for name in present(LUT_OPS)]
        xs[of(*LUT_OPS)] = _apply_lut(xs[of(*LUT_OPS)], torch.cat(luts).to(torch.uint8))
    for name in present(BLEND_OPS):
        xs[of(name)] = _blend_for(name, xs[of(name)], _blend_weight(name, v0[of(name)]))
    if present(["rescale"]):
        r = of("rescale")
        xs[r] = rescale_batch(xs[r], v0[r], v1[r])
    if present(["cutout"]):
        c = of("cutout")
        xs[c] = cutout_batch(xs[c], cutout_size(v0[c], h, w), cx[c], cy[c])
    inverse = torch.empty_like(perm).scatter_(0, perm, torch.arange(n, device=x.device))
    return _words(xs).index_select(0, inverse).view(torch.uint8).view(x.shape)
