"""A test set of ready (normalised float) tensors in the interface of
:class:`fixmatch_ray.data.batched.EvalImages`, for tests that evaluate on random tensors."""
from __future__ import annotations

import torch

from fixmatch_ray.data.batched import EvalImages


class Tensors(EvalImages):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):  # already normalised: no dataset spec
        self.x, self.y = x, y

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x
