"""UDA (Xie et al., 2019) as the official ``uda.py`` of google-research/fixmatch runs it.

Per step (``uda.py:128-185``): one network call over the labeled view, the weak and the strong
unlabeled views (``augment d.d.rac``: the project's strong view, RandAugment then Cutout), so
BatchNorm sees all three as in the official interleaved call; the unlabeled loss is
``mean(mask · KL(softmax(weak/T) ‖ softmax(strong)))`` with the mask ``max softmax(weak) ≥ 0.95``
of the *plain* weak softmax, weight ``wu``; the entropy of the weak softmax weighted by ``we``
(default 0; its gradient flows, as there); the labeled cross-entropy with training-signal
annealing (``tsa``: off by default; ``linear``/``exp``/``log``), averaged over the kept samples.
Its unlabeled batch is ``uratio`` = 7 times B: the run config's ``mu`` (default 7).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config.cli import opt
from ..config.strict import Options, require
from .base import Algorithm, Collective, Context, Forward, StepInput, Views, register
from .fixmatch import forward_views
from .mixing import TSA_SCHEDULES, entropy_from_logits, kl_from_logits, tsa_cross_entropy, tsa_threshold

TSA_TRAIN_KIMG_CAP = 1 << 14  # uda.py:39: the schedule's length is min(train_kimg, 2^14) << tsa_pos images


def tsa_progress(step: int, batch_size: int, train_kimg: float, tsa_pos: int) -> float:
    """The official ``step_ratio`` (``uda.py:39``): images seen over ``min(train_kimg, 2^14) << tsa_pos``
    (``tsa_pos`` 10 spreads the schedule over the whole run, the default 8 over its first quarter)."""
    return step * batch_size / (min(train_kimg, TSA_TRAIN_KIMG_CAP) * (1 << tsa_pos))


@dataclass(frozen=True)
class UDAOptions(Options):
    wu: float = opt(1.0, "UDA: weight of the unlabeled KL loss (default 1)")
    we: float = opt(0.0, "UDA: weight of the weak view's entropy (default 0)")
    confidence: float = opt(0.95, "UDA: confidence mask on the weak softmax (default 0.95)")
    temperature: float = opt(1.0, "UDA: temperature of the weak target distribution (default 1)")
    tsa: str = opt("no", "UDA: training-signal annealing schedule (default no)", choices=TSA_SCHEDULES)
    tsa_pos: int = opt(8, "UDA: TSA change rate, log2 of the schedule's images per train kimg (default 8)")

    def check(self) -> None:
        require(self.wu >= 0, f"wu: must be >= 0, got {self.wu}")
        require(self.we >= 0, f"we: must be >= 0, got {self.we}")
        require(0 <= self.confidence <= 1, f"confidence: must be in [0, 1], got {self.confidence}")
        require(self.temperature > 0, f"temperature: must be > 0, got {self.temperature}")
        require(self.tsa in TSA_SCHEDULES, f"tsa: unknown {self.tsa!r}; expected one of {', '.join(TSA_SCHEDULES)}")
        require(0 <= self.tsa_pos <= 30, f"tsa_pos: must be in [0, 30], got {self.tsa_pos}")


@register
class UDA(Algorithm):
    """Confidence-masked KL consistency from the weak to the strong view, with optional TSA."""

    name = "uda"
    Options = UDAOptions
    metrics = ("loss", "loss_x", "loss_u", "mask", "entropy", "mask_sup")

    @classmethod
    def views(cls, options: UDAOptions) -> Views:
        return Views(labeled=("weak",), unlabeled=("weak", "strong"))

    def __init__(self, options: UDAOptions, context: Context):
        super().__init__(options, context)
        # the run's length in thousand images, the official train_kimg
        self.train_kimg = context.total_steps * context.batch_size / 1024

    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.options
        logits_lb, logits_w, logits_s = forward_views(forward, batch)
        target = (logits_w.float() / o.temperature).detach()
        mask = torch.softmax(logits_w.detach().float(), dim=-1).max(dim=-1).values.ge(o.confidence).float()
        loss_u = (kl_from_logits(target, logits_s) * mask).mean()
        entropy = entropy_from_logits(logits_w).mean()
        progress = tsa_progress(batch.step, self.context.batch_size, self.train_kimg, o.tsa_pos)
        loss_x, mask_sup = tsa_cross_entropy(logits_lb, batch.y_lb, tsa_threshold(o.tsa, progress, self.num_classes))
        loss = loss_x + o.wu * loss_u + o.we * entropy
        metrics = {"loss": loss, "loss_x": loss_x, "loss_u": loss_u, "mask": mask.mean(), "entropy": entropy,
                   "mask_sup": mask_sup.mean()}
        return loss, {k: v.detach() for k, v in metrics.items()}
