"""Pseudo-Labeling (Lee, 2013) as the official ``pseudo_label.py`` runs it.

Per step: the labeled batch (the only call that updates BatchNorm's running statistics,
``pseudo_label.py:49-50``), then one weak view of B unlabeled images whose own argmax is its
target: the pseudo-label comes from the very pass it trains (``:51-55``). The mask is strict,
``any(softmax > threshold)`` (``tf.greater``, ``:57-61``), with ``keepdims=True``: a ``[B, 1]``
mask times the ``[B]`` cross-entropy broadcasts to ``[B, B]``, so the official loss is
``mean(CE) · mean(mask)``, not ``mean(mask · CE)`` (``:64-67``). Reproduced as it is: Table 2's
Pseudo-Labeling row was trained by that code. Consistency weight 1, threshold 0.95, the warm-up
to 0.4 of training (``:43, 122-124``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config.cli import opt
from ..config.strict import require
from .base import Collective, Forward, StepInput, Views, register
from .pimodel import WarmedConsistency, WarmupOptions


@dataclass(frozen=True)
class PseudoLabelOptions(WarmupOptions):
    consistency_weight: float = opt(1.0, "weight of the consistency loss (Π-Model 10, Pseudo-Label 1, "
                                    "Mean Teacher 50: the official defaults)")
    threshold: float = opt(0.95, "τ: pseudo-label confidence threshold (default 0.95)")

    def check(self) -> None:
        super().check()
        require(0 <= self.threshold <= 1, f"threshold: must be in [0, 1], got {self.threshold}")


def pseudo_label_loss(logits_u: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """The official loss and mask fraction: ``mean(CE(logits, argmax)) · mean(max softmax > τ)``
    (the ``[B, 1] × [B]`` broadcast of ``pseudo_label.py:57-67``, written as the product it is)."""
    logits = logits_u.float()
    ce = F.cross_entropy(logits, logits.detach().argmax(dim=-1), reduction="none")
    mask = torch.softmax(logits.detach(), dim=-1).gt(threshold).any(dim=-1).float()
    return ce.mean() * mask.mean(), mask.mean()


@register
class PseudoLabel(WarmedConsistency):
    """Hard pseudo-labels from the trained pass, strict confidence mask, broadcast as the official."""

    name = "pseudolabel"
    Options = PseudoLabelOptions
    metrics = ("loss", "loss_x", "loss_u", "warmup", "mask")

    @classmethod
    def views(cls, options: PseudoLabelOptions) -> Views:
        return Views(labeled=("weak",), unlabeled=("weak",))  # augment d.d

    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        loss_x = self.labeled_loss(forward, batch)
        loss_u, mask = pseudo_label_loss(forward(batch.x_ulb[0], update_bn=False), self.options.threshold)
        return self.combine(loss_x, loss_u, batch.step, mask=mask)
