"""Augmentation policies: the per-image reference and the batched device path of each.

Add a policy: a :class:`~.base.Policy` subclass in its own module, and its line in ``POLICIES``.
"""
from __future__ import annotations

import torch

from .base import Policy
from .ctaugment_batched import CTAugmentPolicy
from .randaugment_policy import RandAugment

POLICIES: dict[str, type[Policy]] = {p.name: p for p in (RandAugment, CTAugmentPolicy)}

__all__ = ["POLICIES", "Policy", "build_policy"]


def build_policy(name: str, device: torch.device | str = "cpu") -> Policy:
    """A fresh policy ``name`` (a learning one keeps its state on ``device``); an unknown name is
    one ValueError line listing the known ones."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}")
    cls = POLICIES[name]
    return cls(device=device) if cls.learns else cls()
