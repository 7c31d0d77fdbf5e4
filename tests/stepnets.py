"""Stand-in networks for algorithm steps worked out by hand: a :class:`Forward` that records its calls."""
from __future__ import annotations

from typing import Callable

import torch


class Recorder:
    """The network as ``logits(x)`` (and ``heads[name](x)`` for an extra head); records every call as
    ``(input, update_bn, head)``."""

    def __init__(self, logits: Callable[[torch.Tensor], torch.Tensor],
                 heads: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None):
        self.logits, self.heads, self.calls = logits, heads or {}, []

    def __call__(self, x, *, update_bn=True, head=None):
        self.calls.append((x.detach().clone(), update_bn, head))
        return self.logits(x) if head is None else self.heads[head](x)
