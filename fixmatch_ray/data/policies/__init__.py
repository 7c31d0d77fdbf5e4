"""Augmentation policies: the per-image reference and the batched device path of each.

Add a policy: a :class:`~.base.Policy` subclass in its own module, and its line below; another
package adds its own through the ``fixmatch_ray.policies`` entry-point group.
"""
from __future__ import annotations

import torch

from ...plugins import Registry
from .base import BACKENDS, STRONG_AUGS, Policy
from .ctaugment_batched import CTAugmentPolicy
from .randaugment_policy import RandAugment


def _valid(name: str, cls: object) -> str | None:
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        return f"expected a subclass of fixmatch_ray.data.policies.base.Policy, got {cls!r}"
    if not cls.backends or not set(cls.backends) <= set(BACKENDS):
        return f"its backends {sorted(cls.backends)!r} must be one or both of {', '.join(BACKENDS)}"
    if cls.learns and "pil" in cls.backends:
        return "a policy that learns has only the tensor backend (data-loader processes never see its updates)"
    return None


POLICIES: Registry[type[Policy]] = Registry("policy", _valid)
for _builtin in (RandAugment, CTAugmentPolicy):
    POLICIES.add(_builtin.name, _builtin)

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
