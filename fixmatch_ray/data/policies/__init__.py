"""Augmentation policies: the per-image reference and the batched device path of each.

Add a policy: a :class:`~.base.Policy` subclass in its own module, and its line in ``POLICIES``.
"""
from __future__ import annotations

import torch

from .base import STRONG_AUGS, Policy
from .ctaugment_batched import CTAugmentPolicy
from .randaugment_policy import RandAugment

POLICIES: dict[str, type[Policy]] = {p.name: p for p in (RandAugment, CTAugmentPolicy)}

__all__ = ["POLICIES", "Policy", "build_policy"]


def build_policy(name: str, device: torch.device | str = "cpu", strong_aug: str = "full") -> Policy:
    """A fresh policy ``name`` (a learning one keeps its state on ``device``) making the strong
    view's parts ``strong_aug`` (:data:`~.base.STRONG_AUGS`); an unknown name is one ValueError
    line listing the known ones."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}")
    if strong_aug not in STRONG_AUGS:
        raise ValueError(f"unknown strong_aug {strong_aug!r}; expected one of {', '.join(STRONG_AUGS)}")
    cls = POLICIES[name]
    with_ops, with_cutout = STRONG_AUGS[strong_aug]
    parts = {"with_ops": with_ops, "with_cutout": with_cutout}
    return cls(device=device, **parts) if cls.learns else cls(**parts)
