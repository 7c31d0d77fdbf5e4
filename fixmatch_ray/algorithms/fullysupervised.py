"""The fully supervised reference: every training label, the official ``fully_supervised/fs_baseline.py`` loss.

Cross-entropy of the weak labeled view against label-smoothed targets ``l − s·(l − 1/C)``
(``fs_baseline.py:42-46``, ``libml/models.py:152-154``; ``smoothing`` 0.001, the script's
default and ``runs/all.sh``'s for CIFAR). Its run trains on every training image
(``all_labels``: ``num_labeled`` is the train set). The optimiser is the run config's (default:
FixMatch's SGD, cosine, wd 5e-4), not the script's Adam at a constant 0.002 with decoupled weight
decay: the reference row then differs from the others in its labels only (README, What is
faithful). The contract gives every step at least one unlabeled view: one weak view of B
unlabeled images is drawn and left unused (augmentation work only, no forward).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..config.cli import opt
from ..config.strict import Options, require
from .base import Algorithm, Collective, Forward, StepInput, Views, register


@dataclass(frozen=True)
class FullySupervisedOptions(Options):
    smoothing: float = opt(0.001, "label smoothing s: targets l − s·(l − 1/C) (default 0.001, fs_baseline.py)")

    def check(self) -> None:
        require(0 <= self.smoothing <= 1, f"smoothing: must be in [0, 1], got {self.smoothing}")


@register
class FullySupervised(Algorithm):
    """Supervised training on all labels."""

    name = "fullysupervised"
    Options = FullySupervisedOptions
    metrics = ("loss",)
    mu = 1
    all_labels = True

    @classmethod
    def views(cls, options: FullySupervisedOptions) -> Views:
        return Views(labeled=("weak",), unlabeled=("weak",))

    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        logits = forward(batch.x_lb[0]).float()
        loss = F.cross_entropy(logits, batch.y_lb, label_smoothing=self.options.smoothing)
        return loss, {"loss": loss.detach()}
