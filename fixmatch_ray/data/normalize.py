"""The one normalisation of images, for training views (per image and batched) and evaluation."""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def _stats(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1),
            torch.tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1))


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 ``(..., C, H, W)`` → float32 ``(x/255 − mean)/std`` per channel (in place after the
    one conversion), the same float operations for every path, so they agree to the bit."""
    m, s = _stats(tuple(mean), tuple(std), x.device)
    return x.float().div_(255.0).sub_(m).div_(s)
