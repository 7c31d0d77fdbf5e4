"""The algorithm interface: one SSL step as loss + metrics, its own state, and DDP sync.

An :class:`Algorithm` receives this rank's slice of a step's batch and a ``forward`` callable,
and returns the loss to backpropagate with named 0-dim metric tensors. It touches no optimiser,
file, writer or Ray: the run loop does the backward pass, the optimiser step and the logging.
State an algorithm keeps across steps (e.g. FlexMatch's per-sample pseudo-labels) lives in
``state_dict`` and is kept identical on every rank through a :class:`Collective`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, TypeVar

import torch
from torch import Tensor

Forward = Callable[[Tensor], Tensor]
# The EMA model's forward, ``ema_forward(x, train=False)``: logits without gradient, in eval mode
# (its BatchNorm statistics) or, with ``train=True``, with the batch's statistics.
EMAForward = Callable[..., Tensor]


class Collective(Protocol):
    """How an algorithm syncs its state across DDP ranks."""

    rank: int
    world_size: int

    def all_gather(self, t: Tensor) -> Tensor:
        """Concatenate ``t`` of every rank along dim 0, in rank order (shapes equal on all ranks)."""
        ...

    def all_reduce(self, t: Tensor, op: str = "sum") -> Tensor:
        """``op`` (``"sum"`` or ``"max"``) of ``t`` over ranks; the input is left unchanged."""
        ...


class _Local:
    """The single-process collective: every operation is the identity."""

    rank = 0
    world_size = 1

    def all_gather(self, t: Tensor) -> Tensor:
        return t

    def all_reduce(self, t: Tensor, op: str = "sum") -> Tensor:
        _reduce_op(op)  # a bad op name fails alike with one rank and with many
        return t


LOCAL: Collective = _Local()


REDUCE_OPS = ("sum", "max")


def _reduce_op(op: str) -> str:
    if op not in REDUCE_OPS:
        raise ValueError(f"all_reduce op {op!r} is not supported: expected one of {', '.join(REDUCE_OPS)}")
    return op


class TorchCollective:
    """``torch.distributed`` (gloo or NCCL) behind :class:`Collective`; the default process group
    unless ``group`` is given. Must be built after ``init_process_group``."""

    def __init__(self, group: Any = None):
        import torch.distributed as dist

        self._dist, self.group = dist, group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def all_gather(self, t: Tensor) -> Tensor:
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        self._dist.all_gather(parts, t, group=self.group)  # list form: gloo and NCCL alike
        return torch.cat(parts)

    def all_reduce(self, t: Tensor, op: str = "sum") -> Tensor:
        out = t.clone()
        reduce_op = {"sum": self._dist.ReduceOp.SUM, "max": self._dist.ReduceOp.MAX}[_reduce_op(op)]
        self._dist.all_reduce(out, op=reduce_op, group=self.group)
        return out


@dataclass
class StepInput:
    """This rank's slice of one step's batch, already on the device."""

    x_lb: Tensor  # labeled images (weakly augmented)
    y_lb: Tensor  # their labels
    x_ulb_w: Tensor  # unlabeled images, weak view
    x_ulb_s: Tensor  # the same unlabeled images, strong view
    idx_ulb: Tensor  # (len(x_ulb_w),) long: their indices into the unlabeled set
    step: int  # the optimisation step this batch is for (0-based)
    # The EMA model's forward where the run keeps one (None otherwise): for algorithms whose
    # targets come from the EMA model (FixMatch's mean-teacher ablation). Optional, so an
    # algorithm that ignores it, and code that builds a StepInput without it, are unchanged.
    ema_forward: EMAForward | None = None


class Algorithm(ABC):
    """One semi-supervised learning algorithm; subclasses set ``name`` and register themselves.

    ``cfg`` is the run's ``RunConfig``: algorithms read ``threshold`` (τ), ``T`` and
    ``lambda_u`` from it, and their own options with ``getattr(cfg, key, default)``.
    """

    name: ClassVar[str]

    def __init__(self, cfg: Any, num_classes: int, num_unlabeled: int, device: torch.device):
        self.cfg = cfg
        self.num_classes = num_classes
        self.num_unlabeled = num_unlabeled
        self.device = torch.device(device)

    @abstractmethod
    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        """``forward(x)`` gives fp32 logits (model in train mode, under autocast). Return the loss
        to backpropagate and named 0-dim detached metrics (same keys every step). No host sync
        (``.item()``, ``.tolist()``, ``nonzero``) in here: the loop reads metrics once per epoch."""

    def state_dict(self) -> dict[str, Any]:
        """The algorithm's own state, saved in every checkpoint (empty when stateless)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"algorithm {self.name!r} keeps no state, got keys {sorted(state)}")


REGISTRY: dict[str, type[Algorithm]] = {}
A = TypeVar("A", bound=type[Algorithm])


def register(cls: A) -> A:
    """Class decorator: make ``cls`` buildable by its ``name``."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute name = '<algorithm name>'")
    if name in REGISTRY and REGISTRY[name] is not cls:
        raise ValueError(f"algorithm name {name!r} is already registered by {REGISTRY[name].__qualname__}")
    REGISTRY[name] = cls
    return cls


def build_algorithm(name: str, cfg: Any, num_classes: int, num_unlabeled: int,
                    device: torch.device | str) -> Algorithm:
    """The registered algorithm ``name``; an unknown name is a one-line ``ValueError``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}: expected one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](cfg, num_classes, num_unlabeled, torch.device(device))
