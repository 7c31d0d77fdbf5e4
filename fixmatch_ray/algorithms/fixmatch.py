"""FixMatch (Sohn et al., 2020) on the :class:`~fixmatch_ray.algorithms.base.Algorithm` interface.

A thin adapter: one forward over ``cat(x_lb, x_ulb_w, x_ulb_s)`` (so BatchNorm sees all three
views together, as in the official code), then the pure :func:`fixmatch_ray.fixmatch.fixmatch_loss`.
Stateless.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..fixmatch import fixmatch_loss
from .base import Algorithm, Collective, Forward, StepInput, register


def forward_views(forward: Forward, batch: StepInput) -> tuple[Tensor, Tensor, Tensor]:
    """Logits of the labeled, weak and strong views from a single forward pass."""
    n_lb, n_ulb = len(batch.x_lb), len(batch.x_ulb_w)
    logits = forward(torch.cat([batch.x_lb, batch.x_ulb_w, batch.x_ulb_s]))
    logits_lb, logits_w, logits_s = logits.split([n_lb, n_ulb, n_ulb])
    return logits_lb, logits_w, logits_s


@register
class FixMatch(Algorithm):
    """Fixed confidence threshold τ on hard pseudo-labels of the weak view.

    The official ablations, by run config: ``pseudo_label: soft`` (sharpened soft targets, see
    :func:`fixmatch_ray.fixmatch.fixmatch_loss`) and ``teacher: ema`` / ``ema_train``
    (``ab_fixmatch_meanteacher[_train].py``: the pseudo-labels come from the EMA model's logits
    of the weak view, eval mode / batch statistics). The one student forward still runs over all
    three views, as there (BatchNorm sees them together); the student's weak logits go unused.
    Deviation: the official mean-teacher scripts train on ``logits[batch:]`` (weak *and* strong
    student logits) against the μB pseudo-labels, a shape mismatch; here the strong view is trained.
    """

    name = "fixmatch"

    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        logits_lb, logits_w, logits_s = forward_views(forward, batch)
        cfg = self.cfg
        teacher = getattr(cfg, "teacher", "model")
        if teacher != "model":
            if batch.ema_forward is None:
                raise ValueError(f"teacher: {teacher} needs the EMA model; this run keeps none (use_ema: true)")
            logits_w = batch.ema_forward(batch.x_ulb_w, train=teacher == "ema_train")
        out = fixmatch_loss(logits_lb, batch.y_lb, logits_w, logits_s, lambda_u=cfg.lambda_u, T=cfg.T,
                            threshold=cfg.threshold, pseudo=getattr(cfg, "pseudo_label", "hard"))
        metrics = {"loss": out.loss, "loss_x": out.loss_x, "loss_u": out.loss_u, "mask": out.mask}
        return out.loss, {k: v.detach() for k, v in metrics.items()}
