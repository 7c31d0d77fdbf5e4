"""FixMatch augmentation, per image on PIL: the reference (oracle) implementation.

weak = horizontal flip (where the dataset allows it) + reflect-pad-and-crop;
strong = weak + RandAugmentMC (2 of 14 ops drawn with replacement, each applied with p = 0.5
at a level uniform in 1..10) + an always-on Cutout of half the image side.
Every random draw comes from the ``np.random.Generator`` passed in; no global RNG, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from .base import Policy, parse_anchoring

FILL = (128, 128, 128)  # uncovered pixels of rotate/shear/translate (as the PyTorch port)
CUTOUT_FILL = (127, 127, 127)
MAX_LEVEL = 10
OP_NAMES: tuple[str, ...] = (
    "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize",
    "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY",
)
SIGNED_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})
_ENHANCERS = {"Brightness": ImageEnhance.Brightness, "Color": ImageEnhance.Color,
              "Contrast": ImageEnhance.Contrast, "Sharpness": ImageEnhance.Sharpness}


def magnitude(name: str, level: int) -> float | int | None:
    """The parameter of op ``name`` at ``level`` (1..10); None for parameterless ops.

    Enhancer factors are the official FixMatch ``0.1 + 1.8·v/10`` (0.28..1.9); the PyTorch port's
    ``0.05 + 0.095·v`` only ever darkens, a known deviation not copied here.
    """
    if name not in OP_NAMES:
        raise ValueError(f"unknown op {name!r}; expected one of {', '.join(OP_NAMES)}")
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= MAX_LEVEL:
        raise ValueError(f"level {level!r} of {name} is invalid: expected an integer in 1..{MAX_LEVEL}")
    v = int(level)
    if name in _ENHANCERS:
        return 0.1 + 1.8 * v / MAX_LEVEL
    if name == "Posterize":
        return int(v * 4 / MAX_LEVEL) + 4
    if name == "Rotate":
        return int(v * 30 / MAX_LEVEL)
    if name in ("ShearX", "ShearY", "TranslateX", "TranslateY"):
        return v * 0.3 / MAX_LEVEL
    if name == "Solarize":
        return 256 - int(v * 256 / MAX_LEVEL)
    return None


def apply_op(img: Image.Image, name: str, level: int, sign: int = 1) -> Image.Image:
    """Apply op ``name`` at ``level``; ``sign`` (±1) sets the direction of geometric ops."""
    m = magnitude(name, level)
    if name == "Identity":
        return img.copy()
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Posterize":
        return ImageOps.posterize(img, m)
    if name == "Solarize":
        return ImageOps.solarize(img, m)
    if name in _ENHANCERS:
        return _ENHANCERS[name](img).enhance(m)
    if name == "Rotate":
        return img.rotate(sign * m, fillcolor=FILL)
    if name == "ShearX":
        coeffs = (1, sign * m, 0, 0, 1, 0)
    elif name == "ShearY":
        coeffs = (1, 0, 0, sign * m, 1, 0)
    elif name == "TranslateX":  # PIL's affine maps output to input: +px moves content left
        coeffs = (1, 0, sign * int(m * img.size[0]), 0, 1, 0)
    else:  # TranslateY
        coeffs = (1, 0, 0, 0, 1, sign * int(m * img.size[1]))
    return img.transform(img.size, Image.AFFINE, coeffs, fillcolor=FILL)


def cutout(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """Gray out a ``size``×``size`` square (clipped at the border) centred uniformly at random.

    The box's right/bottom edge is exclusive: exactly ``size``² pixels when inside the image
    (the port's ``ImageDraw.rectangle`` paints (size+1)²).
    """
    w, h = img.size
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    x0, y0 = int(max(0.0, cx - size / 2)), int(max(0.0, cy - size / 2))
    x1, y1 = int(min(w, x0 + size)), int(min(h, y0 + size))
    out = img.copy()
    out.paste(CUTOUT_FILL, (x0, y0, x1, y1))
    return out


@dataclass(frozen=True)
class OpDraw:
    """One RandAugmentMC op as drawn: which op, its level, whether it fires, its direction."""

    name: str
    level: int  # 1..m
    apply: bool  # the p = 0.5 coin
    sign: int  # ±1; only signed ops use it, but it is drawn for every op


def draw_rand_augment(rng: np.random.Generator, n: int = 2, m: int = MAX_LEVEL) -> list[OpDraw]:
    """RandAugmentMC's random choices for one image.

    Draw order (fixed, 4 draws per op): op index uniform over the 14, level uniform in 1..m,
    the p = 0.5 apply coin, the ±1 sign (drawn for every op so the count never varies).
    """
    if n < 0 or not 1 <= m <= MAX_LEVEL:  # fail here, not later inside magnitude()
        raise ValueError(f"need n >= 0 and m in 1..{MAX_LEVEL}, got n={n!r}, m={m!r}")
    draws = []
    for _ in range(n):
        name = OP_NAMES[int(rng.integers(len(OP_NAMES)))]
        level = int(rng.integers(1, m + 1))
        apply = bool(rng.random() < 0.5)
        sign = 1 if rng.random() < 0.5 else -1
        draws.append(OpDraw(name, level, apply, sign))
    return draws


def rand_augment_mc(img: Image.Image, rng: np.random.Generator, n: int = 2, m: int = MAX_LEVEL,
                    cutout_frac: float = 0.5, with_ops: bool = True, with_cutout: bool = True) -> Image.Image:
    """RandAugmentMC: ``n`` random ops, then an always-on Cutout of ``cutout_frac`` of the side.

    ``with_ops=False`` / ``with_cutout=False`` leave that part out (the official Cutout
    ablations); a part left out draws nothing from ``rng``."""
    if with_ops:
        for d in draw_rand_augment(rng, n, m):
            if d.apply:
                img = apply_op(img, d.name, d.level, d.sign)
    return cutout(img, int(cutout_frac * img.size[0]), rng) if with_cutout else img


def weak_augment(img: Image.Image, rng: np.random.Generator, flip: bool) -> Image.Image:
    """Flip with p = 0.5 (if ``flip``), reflect-pad by 1/8 of the side, random crop back.

    Same as torchvision's RandomHorizontalFlip + RandomCrop(padding, padding_mode='reflect'),
    drawing from ``rng``: the flip coin first (only when flips are allowed), then y and x offsets.
    """
    arr = np.asarray(img)
    if flip and rng.random() < 0.5:
        arr = arr[:, ::-1]
    h, w = arr.shape[:2]
    pad = int(0.125 * w)
    padded = np.pad(arr, ((pad, pad), (pad, pad)) + ((0, 0),) * (arr.ndim - 2), mode="reflect")
    top, left = int(rng.integers(0, 2 * pad + 1)), int(rng.integers(0, 2 * pad + 1))
    return Image.fromarray(np.ascontiguousarray(padded[top:top + h, left:left + w]))


def strong_augment(img: Image.Image, rng: np.random.Generator, flip: bool) -> Image.Image:
    """Weak augmentation, then RandAugmentMC (with its Cutout), all from ``rng`` in that order."""
    return rand_augment_mc(weak_augment(img, rng, flip), rng)


def to_tensor(img: Image.Image, mean: tuple[float, float, float], std: tuple[float, float, float]) -> torch.Tensor:
    """float32 CHW: ``(x/255 - mean) / std``."""
    x = torch.from_numpy(np.array(img, dtype=np.float32, copy=True)).permute(2, 0, 1).div_(255.0)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class TransformFixMatch:
    """The per-image reference pipeline: labeled → weak; unlabeled → (weak, strong), or the views
    ``anchoring`` names (pseudo-label view, trained view: ab_fixmatch_anchoring)."""

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float], flip: bool,
                 policy: Policy | None = None, anchoring: str | tuple[str, str] = ("weak", "strong")):
        self.mean, self.std, self.flip = tuple(mean), tuple(std), flip
        self.strong_image = policy.strong_image if policy is not None else rand_augment_mc
        self.anchoring = parse_anchoring(anchoring)

    def labeled(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        """Weakly augmented, normalised."""
        return to_tensor(weak_augment(img, rng, self.flip), self.mean, self.std)

    def view(self, img: Image.Image, rng: np.random.Generator, kind: str) -> Image.Image:
        """A ``weak`` view, or a ``strong`` one: its own weak step, then the policy."""
        weak = weak_augment(img, rng, self.flip)
        return self.strong_image(weak, rng) if kind == "strong" else weak

    def unlabeled(self, img: Image.Image, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(weak, strong) views (or the ``anchoring`` pair); the first draws first, and each view
        does its own independent weak step."""
        first = self.view(img, rng, self.anchoring[0])
        second = self.view(img, rng, self.anchoring[1])
        return to_tensor(first, self.mean, self.std), to_tensor(second, self.mean, self.std)

    def test(self, img: Image.Image) -> torch.Tensor:
        """No augmentation, just normalised."""
        return to_tensor(img, self.mean, self.std)
