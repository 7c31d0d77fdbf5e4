"""The augmentation-policy interface: the strong view, per image (reference) and per batch (device).

A policy turns a weakly augmented image into the strong view, on the backends it declares in
``backends``: ``pil`` (``strong_image`` on PIL, per image, run by data-loader processes) and
``tensor`` (``strong_batch`` on a uint8 ``(N, C, H, W)`` tensor, the batched device path); a policy
with both keeps them equal under the same draws. ``aug_backend: auto`` picks one the policy
declares, and asking for one it does not is a config error.
A policy that learns during training (``learns = True``, e.g. CTAugment) keeps its state in
``state_dict`` (saved in every checkpoint), updates it in :meth:`learn` after each step with
the same inputs on every DDP rank, and needs the device path: data-loader processes cannot see
its updates.

Every policy takes ``with_ops`` and ``with_cutout`` (the official Cutout ablations, run config
``strong_aug``): the strong view is the policy's ops and then Cutout; a part left out draws
nothing from the generator, on both paths.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

# strong_aug (run config) -> (with_ops, with_cutout): ab_fixmatch_nocutout / ab_fixmatch_onlycutout
STRONG_AUGS: dict[str, tuple[bool, bool]] = {
    "full": (True, True), "no_cutout": (True, False), "cutout_only": (False, True)}
# The views both data paths make of an image (an algorithm names the ones its step needs): weak
# (flip where allowed, reflect-pad, crop) and strong (its own weak step, then the policy).
VIEWS = ("weak", "strong")


def check_views(kinds: tuple[str, ...], side: str) -> tuple[str, ...]:
    """``kinds`` as given: one or more of :data:`VIEWS` (a ValueError line otherwise)."""
    kinds = tuple(kinds)
    if not kinds or any(k not in VIEWS for k in kinds):
        raise ValueError(f"{side} views {kinds!r}: expected one or more of {', '.join(VIEWS)}")
    return kinds


@dataclass(frozen=True)
class Rows:
    """Rows ``start..stop`` of a batch of ``total`` samples (a DDP rank's slice of the global batch).

    A batched augmentation given ``rows`` draws its random parameters for all ``total`` samples,
    in the same order as for the whole batch, and applies them to its rows only: G ranks then see
    exactly the samples of one worker, each doing 1/G of the work."""

    start: int
    stop: int
    total: int

    @classmethod
    def all(cls, n: int) -> "Rows":
        return cls(0, n, n)

    def of(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This slice of ``t`` (drawn for the whole batch) along ``dim``."""
        if self.start == 0 and self.stop == self.total:
            return t
        return t.narrow(dim, self.start, self.stop - self.start)


BACKENDS = ("pil", "tensor")  # strong_image, strong_batch


class Policy:
    """A strong-augmentation policy; subclasses set ``name`` and ``backends`` and register (built
    in: a line in ``policies.POLICIES``; another package: an entry point in ``fixmatch_ray.policies``)."""

    name: ClassVar[str]
    backends: ClassVar[frozenset[str]] = frozenset(BACKENDS)  # the ones it implements
    learns: ClassVar[bool] = False

    def __init__(self, with_ops: bool = True, with_cutout: bool = True):
        if not (with_ops or with_cutout):
            raise ValueError(f"policy {self.name}: a strong view needs its ops, its Cutout or both")
        self.with_ops, self.with_cutout = with_ops, with_cutout

    def strong_image(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """The strong view of one (already weakly augmented) image, all draws from ``rng``."""
        raise NotImplementedError

    def strong_batch(self, x: torch.Tensor, gen: torch.Generator, rows: Rows | None = None) -> torch.Tensor:
        """The strong views of a uint8 batch of weak views, each sample its own draws from ``gen``;
        with ``rows``, ``x`` holds those rows of a bigger batch (draws made for all of it)."""
        raise NotImplementedError

    def probe_batch(self, x: torch.Tensor, gen: torch.Generator, rows: Rows | None = None) -> tuple[torch.Tensor, Any]:
        """Probe views of a uint8 batch of weak labeled views (``rows`` of the batch, as in
        :meth:`strong_batch`) and what :meth:`learn` needs to know of the whole batch's probes
        (only for ``learns`` policies)."""
        raise NotImplementedError

    def learn(self, probe: Any, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Update from the probes' class probabilities (EMA model) and labels, the same on every rank."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"policy {self.name} keeps no state, got keys {sorted(state)}")
