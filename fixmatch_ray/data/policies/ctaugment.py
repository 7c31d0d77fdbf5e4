"""CTAugment (control-theory augmentation) per image on PIL: the reference (oracle) implementation.

Faithful to the official FixMatch code (``libml/ctaugment.py``, ``fixmatch.py``, ``cta/lib/train.py``
of google-research/fixmatch). Every op parameter lies in [0, 1); each parameter has its own bins
(17 for most, posterize 8, rescale 17 × 6 methods, identity none) and one rate per bin, all 1 at the
start. The settings in effect are the flags ``adepth=2, ath=0.80, adecay=0.99`` (the class default
``th=0.85`` is overridden by ``ath`` and never used by FixMatch).

- training draw (:meth:`CTAugment.policy`, ``probe=False``): 2 ops uniform; per parameter
  p = (rate + 0.01)/max, bins with p < 0.8 zeroed, a bin drawn ∝ p, value = (bin + U[0,1))/nbins.
  The strong view is weak → those 2 ops → cutout at level 1 (:func:`strong_augment`).
- probe (``probe=True``): 2 ops uniform, every parameter uniform in [0, 1), rates ignored, no cutout.
  The EMA model classifies the probe; proximity = 1 − Σ|p − onehot(y)|/2 (:func:`proximity`);
  every parameter value v of that probe updates bin int(v·nbins·0.999):
  rate = 0.99·rate + 0.01·proximity (:meth:`CTAugment.update`).

Deviations, all without effect on the distributions: one ``np.random.Generator`` passed in instead
of the global ``random``/``np.random`` (the official op choice uses Python's ``random.choice``);
rates are float64 (the official float32 arrays were updated in float64 under numpy 1.x and stored
rounded to float32); images are PIL uint8 throughout (the official converts from [-1, 1] floats and
back, losslessly); ``Image.ANTIALIAS`` is ``Image.LANCZOS`` (its alias, removed in Pillow 10).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from .randaugment import weak_augment

DEPTH, THRESHOLD, DECAY = 2, 0.80, 0.99  # flags adepth, ath, adecay of cta/lib/train.py
CUTOUT_FILL = (127, 127, 127)
# Bins per parameter, in the official registration order (it fixes the flat layout of the rates).
OPS: dict[str, tuple[int, ...]] = {
    "autocontrast": (17,), "blur": (17,), "brightness": (17,), "color": (17,), "contrast": (17,),
    "cutout": (17,), "equalize": (17,), "invert": (17,), "identity": (), "posterize": (8,),
    "rescale": (17, 6), "rotate": (17,), "sharpness": (17,), "shear_x": (17,), "shear_y": (17,),
    "smooth": (17,), "solarize": (17,), "translate_x": (17,), "translate_y": (17,),
}
OP_NAMES: tuple[str, ...] = tuple(OPS)
RESCALE_METHODS = (Image.Resampling.LANCZOS, Image.Resampling.BICUBIC, Image.Resampling.BILINEAR,
                   Image.Resampling.BOX, Image.Resampling.HAMMING, Image.Resampling.NEAREST)


def rate_offsets() -> dict[str, list[int]]:
    """Start of each parameter's bins in the flat rate vector (303 rates in all)."""
    out, at = {}, 0
    for name, bins in OPS.items():
        out[name] = []
        for nb in bins:
            out[name].append(at)
            at += nb
    return out


N_RATES = sum(sum(b) for b in OPS.values())
ChosenOps = list[tuple[str, tuple[float, ...]]]  # [(op name, parameter values in [0, 1)), ...]


# ---- the 19 ops: PIL in, PIL out, parameters in [0, 1) ------------------------------------------

def _enhance(enhancer, img: Image.Image, level: float) -> Image.Image:
    return enhancer(img).enhance(0.1 + 1.9 * level)


def _blend_op(img: Image.Image, other: Image.Image, level: float) -> Image.Image:
    return Image.blend(img, other, level)


def _affine(img: Image.Image, coeffs: tuple) -> Image.Image:
    """PIL AFFINE with NEAREST and the default black fill, as the official code."""
    return img.transform(img.size, Image.AFFINE, coeffs)


def cutout(img: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Official cutout: side 1 + int(level·min(W, H)·0.499) → 16 px at 32×32, 48 px at 96×96 for
    level 1; centre = (rng.integers(W), rng.integers(H)) drawn in that order; box
    [c − side//2, c + side//2) clipped at the border (so an even side is painted exactly, an odd
    one loses a pixel, and side 1 paints nothing); gray (127, 127, 127)."""
    size = 1 + int(level * min(img.size) * 0.499)
    w, h = img.size
    cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
    x0, y0, x1, y1 = max(0, cx - size // 2), max(0, cy - size // 2), min(w, cx + size // 2), min(h, cy + size // 2)
    out = img.copy()
    if x1 > x0 and y1 > y0:
        out.paste(CUTOUT_FILL, (x0, y0, x1, y1))
    return out


def rescale(img: Image.Image, scale: float, method: float) -> Image.Image:
    """Crop a border of up to a quarter of the side (box rounded half-to-even by PIL), resize back
    with one of six filters (index int(method·5.99))."""
    w, h = img.size
    scale *= 0.25
    box = (scale * w, scale * h, w * (1 - scale), h * (1 - scale))
    return img.crop(box).resize(img.size, RESCALE_METHODS[int(method * 5.99)])


def translate(img: Image.Image, delta: float, axis: int) -> Image.Image:
    """Official translate: an offset of (2·delta − 1)·0.3 *pixels* (not a fraction of the side).
    Under NEAREST sampling the source column is floor(x + 0.5 + offset) = x for |offset| < 0.5,
    so this op is the identity on every image (kept, as the official code has it: it still
    occupies a draw and its rates still move)."""
    d = (2 * delta - 1) * 0.3
    return _affine(img, (1, 0, d, 0, 1, 0) if axis == 0 else (1, 0, 0, 0, 1, d))


def _shear(img: Image.Image, shear: float, axis: int) -> Image.Image:
    s = (2 * shear - 1) * 0.3
    return _affine(img, (1, s, 0, 0, 1, 0) if axis == 0 else (1, 0, 0, s, 1, 0))


def _posterize(img: Image.Image, level: float) -> Image.Image:
    return ImageOps.posterize(img, 1 + int(level * 7.999))


def _rotate(img: Image.Image, angle: float) -> Image.Image:
    return img.rotate(int(np.round((2 * angle - 1) * 45)))  # whole degrees in [-45, 45], black fill


def _solarize(img: Image.Image, th: float) -> Image.Image:
    return ImageOps.solarize(img, int(th * 255.999))


OP_FUNCS = {
    "autocontrast": lambda img, v: _blend_op(img, ImageOps.autocontrast(img), v),
    "blur": lambda img, v: _blend_op(img, img.filter(ImageFilter.BLUR), v),
    "brightness": lambda img, v: _enhance(ImageEnhance.Brightness, img, v),
    "color": lambda img, v: _enhance(ImageEnhance.Color, img, v),
    "contrast": lambda img, v: _enhance(ImageEnhance.Contrast, img, v),
    "equalize": lambda img, v: _blend_op(img, ImageOps.equalize(img), v),
    "invert": lambda img, v: _blend_op(img, ImageOps.invert(img), v),
    "identity": lambda img: img,
    "posterize": _posterize,
    "rescale": rescale,
    "rotate": _rotate,
    "sharpness": lambda img, v: _enhance(ImageEnhance.Sharpness, img, v),
    "shear_x": lambda img, v: _shear(img, v, 0),
    "shear_y": lambda img, v: _shear(img, v, 1),
    "smooth": lambda img, v: _blend_op(img, img.filter(ImageFilter.SMOOTH), v),
    "solarize": _solarize,
    "translate_x": lambda img, v: translate(img, v, 0),
    "translate_y": lambda img, v: translate(img, v, 1),
}


def apply(img: Image.Image, policy: ChosenOps, rng: np.random.Generator) -> Image.Image:
    """Apply ``policy`` in order; ``rng`` only feeds cutout's centre (the other ops are deterministic)."""
    for name, params in policy:
        if name not in OPS or len(params) != len(OPS[name]):
            raise ValueError(f"bad policy entry {name!r} {tuple(params)}: expected an op of {', '.join(OP_NAMES)} "
                             f"with {len(OPS.get(name, ()))} parameter(s)")
        img = cutout(img, *params, rng) if name == "cutout" else OP_FUNCS[name](img, *params)
    return img


# ---- the rates ----------------------------------------------------------------------------------

class CTAugment:
    """The per-image CTAugment state: one rate per bin of every op parameter, and its draws."""

    def __init__(self, depth: int = DEPTH, threshold: float = THRESHOLD, decay: float = DECAY):
        self.depth, self.threshold, self.decay = depth, threshold, decay
        self.rates = {name: [np.ones(nb, np.float64) for nb in bins] for name, bins in OPS.items()}

    def rate_to_p(self, rate: np.ndarray) -> np.ndarray:
        """p = (rate + (1 − decay)) / max, entries below the threshold zeroed (the +0.01 keeps an
        all-zero rate vector drawable: its max entry becomes 1)."""
        p = rate + (1 - self.decay)
        p = p / p.max()
        p[p < self.threshold] = 0
        return p

    def policy(self, rng: np.random.Generator, probe: bool) -> ChosenOps:
        """``depth`` ops, each uniform over the 19 (with replacement), with their parameters.

        Draw order per op, as the official code: the op, then one U[0, 1) per parameter, then (not
        for a probe) one bin per parameter. The official code passes ``p / p.sum()`` to
        ``np.random.choice``, which refuses probabilities that do not sum to 1 (±√eps) and draws
        by inverse CDF: ``cdf = cumsum(p); cdf /= cdf[-1]; searchsorted(cdf, U[0,1), 'right')``
        (zeroed bins have empty intervals and are never drawn). ``Generator.choice`` does the same
        with one ``rng.random()``.
        """
        out: ChosenOps = []
        for _ in range(self.depth):
            name = OP_NAMES[int(rng.integers(len(OP_NAMES)))]
            r = rng.random(len(OPS[name]))
            if probe:
                out.append((name, tuple(float(v) for v in r)))
                continue
            values = []
            for ri, rate in zip(r, self.rates[name]):
                p = self.rate_to_p(rate)
                b = int(rng.choice(len(p), p=p / p.sum()))
                values.append((b + float(ri)) / len(p))
            out.append((name, tuple(values)))
        return out

    def update(self, policy: ChosenOps, proximity: float) -> None:
        """For every (op, value) of a probe's policy, in order: bin = int(v·nbins·0.999),
        rate = decay·rate + (1 − decay)·proximity (repeated bins compound, in order)."""
        for name, params in policy:
            for v, rate in zip(params, self.rates[name]):
                b = int(v * len(rate) * 0.999)
                rate[b] = rate[b] * self.decay + proximity * (1 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"rates": float64 (303,)}`` in :data:`OPS` order: the same layout as the batched path's."""
        return {"rates": torch.from_numpy(np.concatenate([r for name in OP_NAMES for r in self.rates[name]]))}

    def load_state_dict(self, state: dict) -> None:
        flat = torch.as_tensor(state["rates"], dtype=torch.float64).reshape(-1).numpy()
        if flat.shape != (N_RATES,):
            raise ValueError(f"CTAugment rates have {flat.size} entries, expected {N_RATES}")
        offsets = rate_offsets()
        for name, bins in OPS.items():
            self.rates[name] = [flat[o:o + nb].copy() for o, nb in zip(offsets[name], bins)]


def proximity(probs: Sequence[float], label: int) -> float:
    """1 − Σ|p − onehot(label)| / 2 (1 for a confident right answer, 0 for a confident wrong one)."""
    p = np.asarray(probs, dtype=np.float64)
    onehot = np.zeros_like(p)
    onehot[label] = 1.0
    return float(1 - 0.5 * np.abs(p - onehot).sum())


def strong_augment(img: Image.Image, cta: CTAugment, rng: np.random.Generator, flip: bool) -> Image.Image:
    """The strong view: weak flip/shift, ``depth`` CTA ops drawn from the rates, cutout at level 1."""
    img = weak_augment(img, rng, flip)
    img = apply(img, cta.policy(rng, probe=False), rng)
    return cutout(img, 1.0, rng)


def probe(img: Image.Image, cta: CTAugment, rng: np.random.Generator) -> tuple[Image.Image, ChosenOps]:
    """A probe of an (already weakly augmented) labeled image: uniform ops and parameters, no cutout."""
    policy = cta.policy(rng, probe=True)
    return apply(img, policy, rng), policy
