"""FixMatch (Sohn et al., 2020) on the :class:`~fixmatch_ray.algorithms.base.Algorithm` contract.

A thin adapter: one forward over the labeled view and both unlabeled views together (so BatchNorm
sees all three, as in the official code), then the pure :func:`.losses.fixmatch_loss`. Stateless.
Its options are the paper's knobs (τ, λu, T) and the official ablations' (``ablation/ab_fixmatch_*.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config.cli import opt
from ..config.strict import Options, require
from .base import Algorithm, Collective, Forward, StepInput, Views, register
from .losses import PSEUDO_LABELS, fixmatch_loss

TEACHERS = ("model", "ema", "ema_train")  # fixmatch / ab_fixmatch_meanteacher / ..._meanteacher_train
ANCHORINGS = ("weak.strong", "weak.weak", "strong.strong", "strong.weak")  # ab_fixmatch_anchoring


@dataclass(frozen=True)
class ConfidenceOptions(Options):
    """The knobs of a confidence-thresholded consistency loss: FixMatch's, shared by FlexMatch."""

    lambda_u: float = opt(1.0, "λu: weight of the unlabeled loss (default 1; 0 = supervised)")
    T: float = opt(1.0, "pseudo-label temperature (default 1)", flag="--T")
    threshold: float = opt(0.95, "τ: pseudo-label confidence threshold (default 0.95)")
    anchoring: str = opt("weak.strong", "views of an unlabeled image: <pseudo-label view>.<trained view> "
                         "(default weak.strong; ab_fixmatch_anchoring)", choices=ANCHORINGS)

    def check(self) -> None:
        require(self.lambda_u >= 0, f"lambda_u: must be >= 0, got {self.lambda_u}")
        require(self.T > 0, f"T: must be > 0, got {self.T}")
        require(0 <= self.threshold <= 1, f"threshold: must be in [0, 1], got {self.threshold}")
        require(self.anchoring in ANCHORINGS,
                f"anchoring: unknown {self.anchoring!r}; expected one of {', '.join(ANCHORINGS)}")

    def views(self) -> Views:
        """One weak labeled view; the unlabeled (pseudo-label view, trained view) of ``anchoring``."""
        return Views(labeled=("weak",), unlabeled=tuple(self.anchoring.split(".")))


@dataclass(frozen=True)
class FixMatchOptions(ConfidenceOptions):
    pseudo_label: str = opt("hard", "hard (default): argmax of softmax(logits/T), mask from that distribution "
                            "(ab_fixmatch_sharpen); soft: target softmax(logits/T), mask from the plain "
                            "softmax (ab_fixmatch_sharpen_conditional_consistency)", choices=tuple(PSEUDO_LABELS))
    teacher: str = opt("model", "weights that make the pseudo-labels: model (default), ema (the EMA model, "
                       "eval mode: ab_fixmatch_meanteacher), ema_train (EMA weights, batch statistics)",
                       choices=TEACHERS)

    def check(self) -> None:
        super().check()
        for name, allowed in (("pseudo_label", tuple(PSEUDO_LABELS)), ("teacher", TEACHERS)):
            value = getattr(self, name)
            require(value in allowed, f"{name}: unknown {value!r}; expected one of {', '.join(allowed)}")


def forward_views(forward: Forward, batch: StepInput) -> tuple[Tensor, Tensor, Tensor]:
    """Logits of the labeled view and the two unlabeled views from a single forward pass."""
    (x_lb,), (x_first, x_second) = batch.x_lb, batch.x_ulb
    n_lb, n_ulb = len(x_lb), len(x_first)
    logits = forward(torch.cat([x_lb, x_first, x_second]))
    logits_lb, logits_w, logits_s = logits.split([n_lb, n_ulb, n_ulb])
    return logits_lb, logits_w, logits_s


@register
class FixMatch(Algorithm):
    """Fixed confidence threshold τ on hard pseudo-labels of the weak view.

    The official ablations, by option: ``pseudo_label: soft`` (sharpened soft targets, see
    :func:`.losses.fixmatch_loss`) and ``teacher: ema`` / ``ema_train``
    (``ab_fixmatch_meanteacher[_train].py``: the pseudo-labels come from the EMA model's logits
    of the weak view, eval mode / batch statistics). The one student forward still runs over all
    three views, as there (BatchNorm sees them together); the student's weak logits go unused.
    Deviation: the official mean-teacher scripts train on ``logits[batch:]`` (weak *and* strong
    student logits) against the μB pseudo-labels, a shape mismatch; here the strong view is trained.
    """

    name = "fixmatch"
    Options = FixMatchOptions
    metrics = ("loss", "loss_x", "loss_u", "mask")

    @classmethod
    def views(cls, options: FixMatchOptions) -> Views:
        return options.views()

    @classmethod
    def needs_ema(cls, options: FixMatchOptions) -> str | None:
        if options.teacher == "model":
            return None
        return f"teacher: {options.teacher} takes pseudo-labels from the EMA model"

    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        logits_lb, logits_w, logits_s = forward_views(forward, batch)
        o = self.options
        if o.teacher != "model":
            if batch.ema_forward is None:
                raise ValueError(f"teacher: {o.teacher} needs the EMA model; this run keeps none (use_ema: true)")
            logits_w = batch.ema_forward(batch.x_ulb[0], train=o.teacher == "ema_train")
        out = fixmatch_loss(logits_lb, batch.y_lb, logits_w, logits_s, lambda_u=o.lambda_u, T=o.T,
                            threshold=o.threshold, pseudo=o.pseudo_label)
        metrics = {"loss": out.loss, "loss_x": out.loss_x, "loss_u": out.loss_u, "mask": out.mask}
        return out.loss, {k: v.detach() for k, v in metrics.items()}
