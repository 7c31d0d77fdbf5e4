"""CTAugment's rescale on a uint8 batch: crop a border, resize back with PIL's arithmetic.

PIL's convolution resize (Resample.c: per output pixel, filter weights normalised to sum 1 and
rounded to 22-bit fixed point; a horizontal pass, rounded and clipped to uint8, then a vertical
pass) is two batched matmuls in float64 per sample: the products and sums are integers below
2^53, so they are exact and the result is PIL's bit for bit. The coefficient matrices are
tabulated per (method, crop) for each side length; NEAREST (``ImagingScaleAffine``: source
int(x0), x0 = scale/2 accumulated in double) is a 0/1 matrix in the same table.
Table sizes (float32, one per side length and device): 0.74 MB for 32 px, 17.3 MB for 96 px; the
dense (CUDA) path gathers two (N, S, S) float64 matrices per round (66 MB for 448 at 96 px).
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch


# ---- rescale: crop and resize back, PIL's resampling as matrices --------------------------------

_F054, _F046 = float(np.float32(0.54)), float(np.float32(0.46))  # Resample.c's 0.54f, 0.46f


def _sinc(x: float) -> float:
    return 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x *= math.pi
    return math.sin(x) / x * (_F054 + _F046 * math.cos(x))


def _bicubic(x: float) -> float:
    x = abs(x)
    if x < 1.0:
        return ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1
    return (((x - 5) * x + 8) * x - 4) * -0.5 if x < 2.0 else 0.0


# (filter, support) in the order of ctaugment.RESCALE_METHODS: LANCZOS, BICUBIC, BILINEAR, BOX, HAMMING
_FILTERS = ((lambda x: _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0, 3.0), (_bicubic, 2.0),
            (lambda x: max(0.0, 1.0 - abs(x)), 1.0), (lambda x: 1.0 if -0.5 < x <= 0.5 else 0.0, 0.5),
            (_hamming, 1.0))


def _resize_matrix(length: int, size: int, method: int) -> np.ndarray:
    """(size, length) fixed-point (×2^22) coefficients of PIL resizing ``length`` → ``size`` pixels:
    precompute_coeffs + normalize_coeffs_8bpc of Resample.c; NEAREST as ImagingScaleAffine."""
    out = np.zeros((size, length))
    scale = length / size
    if method == 5:  # NEAREST: source int(x0), x0 = scale/2 accumulated by += scale in double
        xo = scale * 0.5
        for xx in range(size):
            out[xx, int(xo)] = 1 << 22
            xo += scale
        return out
    fn, support = _FILTERS[method]
    filterscale = max(scale, 1.0)
    support *= filterscale
    for xx in range(size):
        center = (xx + 0.5) * scale
        xmin = max(0, int(center - support + 0.5))
        xmax = min(length, int(center + support + 0.5)) - xmin
        k = [fn((x + xmin - center + 0.5) * (1.0 / filterscale)) for x in range(xmax)]
        ww = sum(k)  # sequential, as the C loop
        for x in range(xmax):
            kx = k[x] / ww if ww != 0.0 else k[x]
            out[xx, xmin + x] = int(-0.5 + kx * (1 << 22)) if kx < 0 else int(0.5 + kx * (1 << 22))
    return out


@functools.lru_cache(maxsize=None)
def _rescale_table(size: int, device: torch.device) -> torch.Tensor:
    """(6, size//4 + 2, 3, size, size) float32 (integers < 2^23, exact): row (method, x0, d) resizes
    the crop [x0, size − x0 − 1 + d) of a side back to ``size``; the identity where nothing is cropped."""
    n0 = size // 4 + 2
    table = np.zeros((6, n0, 3, size, size), np.float32)
    for m, x0, d in itertools.product(range(6), range(n0), range(3)):
        x1 = min(size, size - x0 - 1 + d)
        if x1 - x0 < 1:
            continue
        if x0 == 0 and x1 == size:
            table[m, x0, d] = np.eye(size) * (1 << 22)
        else:
            table[m, x0, d, :, x0:x1] = _resize_matrix(x1 - x0, size, m)
    return torch.from_numpy(table).to(device)


def _rescale_matrices(v0: torch.Tensor, v1: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size, size) float64 matrix per sample along one side of ``size`` pixels."""
    s = v0 * 0.25
    x0 = torch.round(s * size).long()  # Image.crop rounds its float box half to even, as torch.round
    x1 = torch.round(size * (1 - s)).long()
    d = (x1 - (size - x0) + 1).clamp(0, 2)  # |x1 − (size − x0)| ≤ 1: float rounding of the far edge
    m = torch.floor(v1 * 5.99).long().clamp(0, 5)
    table = _rescale_table(size, v0.device)
    return table[m, x0.clamp(0, table.shape[1] - 1), d].double()


def rescale_batch(x: torch.Tensor, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """``ctaugment.rescale(img, v0, v1)`` per sample (float64 parameters): crop box rounded half to
    even, horizontal pass then vertical pass, each (Σ in·k + 2^21) >> 22 clipped to uint8, as PIL."""
    n, c, h, w = x.shape
    kx, ky = _rescale_matrices(v0, v1, w), _rescale_matrices(v0, v1, h)
    tmp = torch.matmul(x.double().view(n, c * h, w), kx.transpose(1, 2))
    tmp = torch.floor((tmp + (1 << 21)) * (1.0 / (1 << 22))).clamp_(0, 255).view(n, c, h, w)
    out = torch.matmul(ky.unsqueeze(1), tmp)
    return torch.floor((out + (1 << 21)) * (1.0 / (1 << 22))).clamp_(0, 255).to(torch.uint8)
