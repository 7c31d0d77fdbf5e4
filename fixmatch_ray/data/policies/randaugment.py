"""FixMatch augmentation, per image on PIL: the reference (oracle) implementation.

weak = horizontal flip (where the dataset allows it) + reflect-pad-and-crop;
strong = weak + RandAugmentMC (2 of 14 ops drawn with replacement, each applied with p = 0.5
at a level uniform in 1..9) + an always-on Cutout of 16 px (:func:`cutout_size`), as the official
``AugmentPoolRAMC`` (``libml/augment.py``) with the ops of ``third_party/auto_augment/augmentations.py``.
Every random draw comes from the ``np.random.Generator`` passed in; no global RNG, no I/O.

Like the official ``apply_policy``, the ops run on an RGBA image once a geometric op has fired:
the pixels it uncovers are transparent black, later ops see them as black (the converting
ops AutoContrast/Equalize/Posterize/Solarize make them opaque black, as the official
``convert('RGB')`` does; the enhancers keep them transparent), and whatever is still
transparent at the end turns grey (``pil_unwrap``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from ..normalize import normalize
from .base import Policy, check_views

# The official grey is 0 in its [-1, 1] pixel scale, i.e. 127.5: uint8 here, so 128 (both for the
# pixels geometric ops leave transparent, official ``pil_unwrap``, and for Cutout, official
# ``cutout_numpy`` multiplying by 0). The PyTorch port fills geometric ops black and Cutout 127.
FILL = (128, 128, 128)
CUTOUT_FILL = FILL
# official ``cutout_numpy(img, size=16)``, which ``AugmentPoolRAMC`` calls without a size
CUTOUT_SIZE = 16
PARAMETER_MAX = 10  # official ``PARAMETER_MAX``: level v means v/10 of an op's range
MAGNITUDE = 10  # official ``AugmentPoolRAMC(magnitude=10)``: levels ``np.random.randint(1, 10)``
MAX_LEVEL = MAGNITUDE - 1  # 9: the highest level ever drawn (10 would be Posterize 0 bits)
OP_NAMES: tuple[str, ...] = (
    "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize",
    "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY",
)
SIGNED_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})
GEOMETRIC_OPS = SIGNED_OPS  # they uncover pixels
# Official: these run on ``img.convert('RGB')`` and convert back, so transparent pixels become opaque black.
CONVERTING_OPS = frozenset({"AutoContrast", "Equalize", "Posterize", "Solarize"})
_ENHANCERS = {"Brightness": ImageEnhance.Brightness, "Color": ImageEnhance.Color,
              "Contrast": ImageEnhance.Contrast, "Sharpness": ImageEnhance.Sharpness}


def magnitude(name: str, level: int) -> float | int | None:
    """The parameter of op ``name`` at ``level`` (1..9); None for parameterless ops.

    The official formulas (``augmentations.py``, ``PARAMETER_MAX`` = 10): enhancer factor
    ``0.1 + 1.8·v/10`` (0.28..1.72; the PyTorch port's ``0.05 + 0.09·v`` only ever darkens),
    Posterize ``4 − int(0.4·v)`` bits (4..1), Rotate ``int(3v)``°, Shear ``0.03·v``, Translate
    ``int(v)`` pixels at any image size, Solarize threshold ``256 − int(25.6·v)`` (231..26).
    """
    if name not in OP_NAMES:
        raise ValueError(f"unknown op {name!r}; expected one of {', '.join(OP_NAMES)}")
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= MAX_LEVEL:
        raise ValueError(f"level {level!r} of {name} is invalid: expected an integer in 1..{MAX_LEVEL}")
    v = int(level)
    if name in _ENHANCERS:
        return v * 1.8 / PARAMETER_MAX + 0.1
    if name == "Posterize":
        return 4 - int(v * 4 / PARAMETER_MAX)
    if name == "Rotate":
        return int(v * 30 / PARAMETER_MAX)
    if name in ("ShearX", "ShearY"):
        return float(v) * 0.3 / PARAMETER_MAX
    if name in ("TranslateX", "TranslateY"):
        return int(v * 10 / PARAMETER_MAX)
    if name == "Solarize":
        return 256 - int(v * 256 / PARAMETER_MAX)
    return None


def apply_op(img: Image.Image, name: str, level: int, sign: int = 1) -> Image.Image:
    """Apply op ``name`` at ``level`` as the official code calls PIL; ``sign`` (±1) sets the
    direction of geometric ops. ``img`` is RGB or RGBA and keeps its mode.

    Geometric ops pass no fill colour: uncovered pixels are 0, transparent black on RGBA (the
    official ``pil_wrap`` image), black on RGB. AutoContrast, Equalize, Posterize and Solarize
    run on the RGB channels and return an opaque image, as the official ``convert('RGB')``.
    """
    m = magnitude(name, level)
    if name == "Identity":
        return img.copy()
    if name in CONVERTING_OPS:
        rgb = img.convert("RGB")
        if name == "AutoContrast":
            out = ImageOps.autocontrast(rgb)
        elif name == "Equalize":
            out = ImageOps.equalize(rgb)
        elif name == "Posterize":
            out = ImageOps.posterize(rgb, m)
        else:
            out = ImageOps.solarize(rgb, m)
        return out.convert(img.mode)
    if name in _ENHANCERS:  # Pillow (since 2.6) keeps the alpha channel through these
        return _ENHANCERS[name](img).enhance(m)
    if name == "Rotate":
        return img.rotate(sign * m)
    if name == "ShearX":
        coeffs = (1, sign * m, 0, 0, 1, 0)
    elif name == "ShearY":
        coeffs = (1, 0, 0, sign * m, 1, 0)
    elif name == "TranslateX":  # PIL's affine maps output to input: +px moves content left
        coeffs = (1, 0, sign * m, 0, 1, 0)
    else:  # TranslateY
        coeffs = (1, 0, 0, 0, 1, sign * m)
    return img.transform(img.size, Image.AFFINE, coeffs)


def unwrap(img: Image.Image) -> Image.Image:
    """RGB of an RGBA image with fully transparent pixels grey (official ``pil_unwrap``)."""
    a = np.array(img.convert("RGBA"))
    rgb = a[..., :3]
    rgb[a[..., 3] == 0] = FILL
    return Image.fromarray(np.ascontiguousarray(rgb))


def cutout_box(cy: int, cx: int, h: int, w: int, size: int) -> tuple[int, int, int, int]:
    """Rows ``[y0, y1)`` and columns ``[x0, x1)`` of the Cutout centred at pixel (cy, cx):
    ``[c − size//2, c + size//2)`` clipped at the border, as official ``create_cutout_mask``
    (a box near the border is cut, not moved inside; an odd ``size`` covers ``size − 1``)."""
    half = size // 2
    return max(0, cy - half), min(h, cy + half), max(0, cx - half), min(w, cx + half)


def cutout_size(h: int, w: int) -> int:
    """The side of RandAugment's Cutout on an ``h`` × ``w`` image: the official fixed 16 px at every
    size (32 px CIFAR/SVHN and 96 px STL-10 alike), but at most half the shorter side. Only the
    16 × 16 digits demo, which is not in the paper, is that small: 16 px there would cover 56 % of
    the image on average, 8 px keeps CIFAR's 19 %."""
    return min(CUTOUT_SIZE, min(h, w) // 2)


def cutout(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """Grey out the :func:`cutout_box` at a centre drawn uniformly over the pixels: row
    ``integers(0, H)`` then column ``integers(0, W)`` (official ``cutout_numpy``)."""
    w, h = img.size
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1, x0, x1 = cutout_box(cy, cx, h, w, size)
    out = img.copy()
    if y1 > y0 and x1 > x0:
        out.paste(CUTOUT_FILL, (x0, y0, x1, y1))
    return out


@dataclass(frozen=True)
class OpDraw:
    """One RandAugmentMC op as drawn: which op, its level, whether it fires, its direction."""

    name: str
    level: int  # 1..m-1
    apply: bool  # the p = 0.5 coin
    sign: int  # ±1; only signed ops use it, but it is drawn for every op


def draw_rand_augment(rng: np.random.Generator, n: int = 2, m: int = MAGNITUDE) -> list[OpDraw]:
    """RandAugmentMC's random choices for one image; levels uniform in ``1..m−1`` (official
    ``np.random.randint(1, magnitude)``, ``magnitude`` = 10: 1..9).

    Draw order (fixed, 4 draws per op): op index uniform over the 14, level, the p = 0.5 apply
    coin, the ±1 sign (drawn for every op so the count never varies).
    """
    if n < 0 or not 2 <= m <= MAGNITUDE:  # fail here, not later inside magnitude()
        raise ValueError(f"need n >= 0 and m in 2..{MAGNITUDE}, got n={n!r}, m={m!r}")
    draws = []
    for _ in range(n):
        name = OP_NAMES[int(rng.integers(len(OP_NAMES)))]
        level = int(rng.integers(1, m))
        apply = bool(rng.random() < 0.5)
        sign = 1 if rng.random() < 0.5 else -1
        draws.append(OpDraw(name, level, apply, sign))
    return draws


def apply_draws(img: Image.Image, draws: list[OpDraw]) -> Image.Image:
    """The drawn ops in order, on RGBA from the first geometric op on (before it the image is
    opaque and RGB gives the same pixels, faster); transparent pixels grey at the end."""
    for d in draws:
        if d.apply:
            if d.name in GEOMETRIC_OPS and img.mode != "RGBA":
                img = img.convert("RGBA")
            img = apply_op(img, d.name, d.level, d.sign)
    return unwrap(img) if img.mode == "RGBA" else img


def rand_augment_mc(img: Image.Image, rng: np.random.Generator, n: int = 2, m: int = MAGNITUDE,
                    with_ops: bool = True, with_cutout: bool = True) -> Image.Image:
    """RandAugmentMC: ``n`` random ops, then an always-on Cutout of :func:`cutout_size` (16 px).

    ``with_ops=False`` / ``with_cutout=False`` leave that part out (the official Cutout
    ablations); a part left out draws nothing from ``rng``.
    """
    if with_ops:
        img = apply_draws(img, draw_rand_augment(rng, n, m))
    return cutout(img, cutout_size(img.size[1], img.size[0]), rng) if with_cutout else img


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
    """float32 CHW: ``(x/255 - mean) / std`` (:func:`..normalize.normalize`)."""
    return normalize(torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1), mean, std)


class ViewTransform:
    """The per-image reference pipeline: each labeled and unlabeled image becomes the views an
    algorithm names (``labeled``, ``unlabeled``: ``weak`` or ``strong``, see
    :data:`.base.VIEWS`), normalised, drawn from the sample's generator in that order."""

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float], flip: bool,
                 policy: Policy | None = None, labeled: tuple[str, ...] = ("weak",),
                 unlabeled: tuple[str, ...] = ("weak", "strong")):
        self.mean, self.std, self.flip = tuple(mean), tuple(std), flip
        self.strong_image = policy.strong_image if policy is not None else rand_augment_mc
        self.kinds = {"labeled": check_views(labeled, "labeled"), "unlabeled": check_views(unlabeled, "unlabeled")}

    def view(self, img: Image.Image, rng: np.random.Generator, kind: str) -> Image.Image:
        """A ``weak`` view, or a ``strong`` one: its own weak step, then the policy."""
        weak = weak_augment(img, rng, self.flip)
        return self.strong_image(weak, rng) if kind == "strong" else weak

    def views(self, img: Image.Image, rng: np.random.Generator, side: str) -> tuple[torch.Tensor, ...]:
        """The ``labeled`` or ``unlabeled`` views, normalised; each view draws after the one before
        it and does its own independent weak step."""
        return tuple(to_tensor(self.view(img, rng, kind), self.mean, self.std) for kind in self.kinds[side])

    def labeled(self, img: Image.Image, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        return self.views(img, rng, "labeled")

    def unlabeled(self, img: Image.Image, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        return self.views(img, rng, "unlabeled")

    def test(self, img: Image.Image) -> torch.Tensor:
        """No augmentation, just normalised."""
        return to_tensor(img, self.mean, self.std)
