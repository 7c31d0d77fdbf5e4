"""Mean Teacher (Tarvainen & Valpola, 2017) as the official ``mean_teacher.py`` runs it.

The Π-Model step (:mod:`.pimodel`) with the teacher's logits from the EMA weights (decay 0.999,
the run's ``ema_decay``) *in training mode*: ``classifier(y_1, training=True, getter=ema_getter)``
(``mean_teacher.py:58``), so the teacher normalises with the batch's statistics and moves no
running statistics. Consistency weight 50, warm-up to 0.4 of training (``:45, 111-112``).
Its ``smoothing`` flag reaches no loss, as in Π-Model.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..config.cli import opt
from .base import Forward, StepInput, register
from .pimodel import PiModel, WarmupOptions


@dataclass(frozen=True)
class MeanTeacherOptions(WarmupOptions):
    consistency_weight: float = opt(50.0, "weight of the consistency loss (Π-Model 10, Pseudo-Label 1, "
                                    "Mean Teacher 50: the official defaults)")


@register
class MeanTeacher(PiModel):
    """Π-Model whose target comes from the EMA weights, BatchNorm on the batch's statistics."""

    name = "meanteacher"
    Options = MeanTeacherOptions

    @classmethod
    def needs_ema(cls, options: MeanTeacherOptions) -> str | None:
        return "meanteacher takes its targets from the EMA model"

    def teacher(self, forward: Forward, batch: StepInput) -> Tensor:
        if batch.ema_forward is None:
            raise ValueError("meanteacher needs the EMA model; this run keeps none (use_ema: true)")
        return batch.ema_forward(batch.x_ulb[0], train=True)
