"""Augmentation policies: the per-image reference and the batched device path of each.

Add a policy: a :class:`~.base.Policy` subclass in its own module, and its line in ``POLICIES``.
"""
from __future__ import annotations

from .base import Policy
from .randaugment_batched import RandAugment

POLICIES: dict[str, type[Policy]] = {RandAugment.name: RandAugment}

__all__ = ["POLICIES", "Policy", "build_policy"]


def build_policy(name: str, **kwargs) -> Policy:
    """A fresh policy ``name``; an unknown name is one ValueError line listing the known ones."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}")
    return POLICIES[name](**kwargs)
