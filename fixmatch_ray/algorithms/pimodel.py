"""Π-Model (Laine & Aila, 2017) as the official ``pi_model.py`` runs it.

Per step: the labeled batch through the model (the only call that updates BatchNorm's running
statistics, ``pi_model.py:50-51``), then two weak views of the same B unlabeled images, each its
own call: the first is the target (no gradient), the second the student (``:52-56``). The loss is
``xe + w·warmup·mean_images(mean_classes((softmax(t) − softmax(s))²))`` (``:57-58, 75``) with
``w = 10`` and the weight ramped linearly to full at ``warmup_pos = 0.4`` of training
(``:44, 111-112``). Mean Teacher (:mod:`.meanteacher`) is the same step with the EMA model as
the teacher. The script's ``smoothing`` flag reaches no loss (``classifier`` drops it): none here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config.cli import opt
from ..config.strict import Options, require
from .base import Algorithm, Collective, Forward, StepInput, Views, register
from .ramps import relative_warmup


@dataclass(frozen=True)
class WarmupOptions(Options):
    """A consistency weight ramped linearly to full at ``warmup_pos`` of training."""

    consistency_weight: float = opt(10.0, "weight of the consistency loss (Π-Model 10, Pseudo-Label 1, "
                                    "Mean Teacher 50: the official defaults)")
    warmup_pos: float = opt(0.4, "fraction of training at which the consistency weight reaches full "
                            "(default 0.4, the official)")

    def check(self) -> None:
        require(self.consistency_weight >= 0, f"consistency_weight: must be >= 0, got {self.consistency_weight}")
        require(0 <= self.warmup_pos <= 1, f"warmup_pos: must be in [0, 1], got {self.warmup_pos}")


def squared_softmax_difference(logits_teacher: Tensor, logits_student: Tensor) -> Tensor:
    """``mean over images of mean over classes of (softmax(teacher) − softmax(student))²``; the
    teacher is detached."""
    p_t = torch.softmax(logits_teacher.detach().float(), dim=-1)
    p_s = torch.softmax(logits_student.float(), dim=-1)
    return ((p_t - p_s) ** 2).mean(dim=-1).mean()


class WarmedConsistency(Algorithm):
    """The shared frame of the official baselines: B unlabeled images, BatchNorm updated by the
    labeled call only, ``loss = xe + weight·warmup·loss_u``."""

    mu = 1
    metrics = ("loss", "loss_x", "loss_u", "warmup")

    def warmup(self, step: int) -> float:
        return relative_warmup(step, self.context.total_steps, self.options.warmup_pos)

    def combine(self, loss_x: Tensor, loss_u: Tensor, step: int,
                **extra: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        warmup = self.warmup(step)
        loss = loss_x + loss_u * (warmup * self.options.consistency_weight)
        metrics = {"loss": loss, "loss_x": loss_x, "loss_u": loss_u,
                   "warmup": torch.tensor(warmup, device=loss.device), **extra}
        return loss, {k: v.detach() for k, v in metrics.items()}

    def labeled_loss(self, forward: Forward, batch: StepInput) -> Tensor:
        logits_x = forward(batch.x_lb[0])  # the one call that moves BatchNorm's running statistics
        return torch.nn.functional.cross_entropy(logits_x.float(), batch.y_lb)


@register
class PiModel(WarmedConsistency):
    """Two stochastic passes of two weak views; the first is the target."""

    name = "pimodel"
    Options = WarmupOptions

    @classmethod
    def views(cls, options: WarmupOptions) -> Views:
        return Views(labeled=("weak",), unlabeled=("weak", "weak"))  # augment d.d.d

    def teacher(self, forward: Forward, batch: StepInput) -> Tensor:
        with torch.no_grad():
            return forward(batch.x_ulb[0], update_bn=False)

    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        loss_x = self.labeled_loss(forward, batch)
        logits_teacher = self.teacher(forward, batch)
        logits_student = forward(batch.x_ulb[1], update_bn=False)
        return self.combine(loss_x, squared_softmax_difference(logits_teacher, logits_student), batch.step)
