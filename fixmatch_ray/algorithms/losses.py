"""The loss pieces of the confidence-based algorithms as pure functions (Sohn et al., 2020, eq. 1-4).

No model, optimiser, device or I/O here: logits in, a small typed result out. FixMatch is
:func:`fixmatch_loss`; an algorithm that picks its pseudo-labels otherwise (FlexMatch's per-class
thresholds) composes :func:`sharpened` and :func:`consistency_loss`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class FixMatchLoss(NamedTuple):
    """Loss terms of one step; all 0-dim tensors (read them once per epoch, not per step)."""

    loss: torch.Tensor  # loss_x + lambda_u * loss_u, the one to backpropagate
    loss_x: torch.Tensor  # supervised cross-entropy on the weakly augmented labeled batch
    loss_u: torch.Tensor  # masked cross-entropy of strong views against pseudo-labels
    mask: torch.Tensor  # fraction of unlabeled samples whose confidence reached the threshold


def sharpened(logits_ulb_w: torch.Tensor, T: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max prob, argmax)`` of the detached ``softmax(logits/T)`` (fp32; no gradient flows back)."""
    probs = torch.softmax(logits_ulb_w.detach().float() / T, dim=-1)
    return probs.max(dim=-1)


def pseudo_label(
    logits_ulb_w: torch.Tensor, T: float = 1.0, threshold: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels and confidence mask from weak-view logits (no gradient flows back).

    ``T`` is the softmax temperature, ``threshold`` is the paper's τ. The mask is taken from the
    sharpened distribution ``softmax(logits/T)`` (the official ``ab_fixmatch_sharpen.py``; its
    argmax is T's); FixMatch itself has no T, which is ``T = 1`` here, bit for bit.
    """
    max_probs, targets = sharpened(logits_ulb_w, T)
    return targets, max_probs.ge(threshold).float()


def soft_pseudo_label(
    logits_ulb_w: torch.Tensor, T: float = 1.0, threshold: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets ``softmax(logits/T)`` and the mask ``max softmax(logits) ≥ τ`` of the *plain*
    distribution (no gradient flows back): the official
    ``ab_fixmatch_sharpen_conditional_consistency.py``, where T sharpens the target only."""
    logits = logits_ulb_w.detach().float()
    mask = torch.softmax(logits, dim=-1).max(dim=-1).values.ge(threshold).float()
    return torch.softmax(logits / T, dim=-1), mask


PSEUDO_LABELS = {"hard": pseudo_label, "soft": soft_pseudo_label}


def fixmatch_loss(
    logits_x_lb: torch.Tensor,
    y_lb: torch.Tensor,
    logits_x_ulb_w: torch.Tensor,
    logits_x_ulb_s: torch.Tensor,
    *,
    lambda_u: float = 1.0,
    T: float = 1.0,
    threshold: float = 0.95,
    pseudo: str = "hard",
) -> FixMatchLoss:
    """The FixMatch loss: ``CE(lb) + λu · mean(mask · CE(strong, pseudo(weak)))``.

    The unlabeled term is averaged over *all* μB samples, masked ones included, as in the
    official code (not over the confident ones only). ``pseudo`` picks the pseudo-label:
    ``hard`` (:func:`pseudo_label`; with T ≠ 1 the official ``ab_fixmatch_sharpen.py``) or
    ``soft`` (:func:`soft_pseudo_label`: cross-entropy against the sharpened distribution).
    """
    if pseudo not in PSEUDO_LABELS:
        raise ValueError(f"unknown pseudo-label {pseudo!r}; expected one of {', '.join(PSEUDO_LABELS)}")
    targets_u, mask = PSEUDO_LABELS[pseudo](logits_x_ulb_w, T=T, threshold=threshold)
    return consistency_loss(logits_x_lb, y_lb, logits_x_ulb_s, targets_u, mask, lambda_u=lambda_u)


def consistency_loss(
    logits_x_lb: torch.Tensor,
    y_lb: torch.Tensor,
    logits_x_ulb_s: torch.Tensor,
    targets_u: torch.Tensor,
    mask: torch.Tensor,
    *,
    lambda_u: float = 1.0,
) -> FixMatchLoss:
    """``CE(lb) + λu · mean(mask · CE(strong, targets))`` for pseudo-labels (hard class indices or
    soft distributions) and a float mask chosen by the caller; the mean runs over all samples."""
    loss_x = F.cross_entropy(logits_x_lb.float(), y_lb, reduction="mean")
    ce_u = F.cross_entropy(logits_x_ulb_s.float(), targets_u, reduction="none")
    loss_u = (ce_u * mask).mean()
    return FixMatchLoss(loss_x + lambda_u * loss_u, loss_x, loss_u, mask.mean())
