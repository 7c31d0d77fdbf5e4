"""A test set of ready (normalised float) tensors in the interface of
:class:`fixmatch_ray.data.batched.EvalImages`, for tests that evaluate on random tensors."""
from __future__ import annotations

import torch


class Tensors:
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1):
        n = len(self.y)
        lo, hi = rank * n // world_size, (rank + 1) * n // world_size
        for start in range(lo, hi, batch_size):
            yield self.x[start:min(start + batch_size, hi)], self.y[start:min(start + batch_size, hi)]
