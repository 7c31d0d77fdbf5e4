"""The algorithm contract: what an SSL algorithm declares, receives and returns.

An :class:`Algorithm` is one module that declares

- its **options**, ``Options``: a frozen dataclass of its own keys (defaults written once), read
  strictly from the run config's keys, sweep files (any option can be a grid axis) and
  ``train`` flags, and carried in the run record's resolved config;
- the **views** it needs of each labeled and unlabeled image (:class:`Views`), which both data
  paths (per image on PIL, per batch on the device) build in that order;
- its **metric names**, ``metrics``: the record, the progress line and every tracker show metric
  ``m`` as ``train_m`` (:func:`metric_key`);
- its **state** across steps (``state_dict``), saved in every checkpoint and kept identical on
  every rank through a :class:`Collective`.

It receives its options and a :class:`Context` (never the run config), and per step this rank's
slice of the batch (:class:`StepInput`) and a :class:`Forward`; it returns the loss to
backpropagate with its named 0-dim metric tensors. It touches no optimiser, file, writer or Ray:
the run loop does the backward pass, the optimiser step and the logging.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, TypeVar

import torch
from torch import Tensor

from ..config.strict import Options
from ..data.policies.base import check_views
from ..plugins import Registry, subclass_of


class Forward(Protocol):
    """The network in training mode, under the run's precision: fp32 logits of ``x``. An algorithm
    may call it several times per step; ``update_bn=False`` normalises with the batch's statistics
    but leaves BatchNorm's running statistics as they were (the official Π-Model, Pseudo-Label and
    Mean Teacher update them from the labeled call only). ``head`` names one of the extra heads the
    algorithm declared (:meth:`Algorithm.heads`): its logits instead of the classifier's."""

    def __call__(self, x: Tensor, *, update_bn: bool = True, head: str | None = None) -> Tensor: ...


# The EMA model's forward, ``ema_forward(x, train=False)``: logits without gradient, in eval mode
# (its BatchNorm statistics) or, with ``train=True``, with the batch's statistics.
EMAForward = Callable[..., Tensor]


def metric_key(name: str) -> str:
    """Metric ``name`` of an algorithm as the record, the progress line and the trackers call it."""
    return f"train_{name}"


@dataclass(frozen=True)
class Views:
    """The views of each image a step gets, in order, each one of ``data.policies.base.VIEWS``: ``weak`` (flip where
    the dataset allows, reflect-pad and crop) or ``strong`` (its own weak step, then the
    augmentation policy). Each view draws its randomness after the one before it, on both data
    paths (e.g. MixMatch: ``unlabeled=("weak",) * K``)."""

    labeled: tuple[str, ...] = ("weak",)
    unlabeled: tuple[str, ...] = ("weak", "strong")

    def __post_init__(self) -> None:
        check_views(self.labeled, "labeled")
        check_views(self.unlabeled, "unlabeled")


@dataclass(frozen=True)
class Context:
    """What an algorithm may know of its run besides its options (fields are added, never renamed)."""

    num_classes: int
    num_unlabeled: int  # size of the unlabeled set: ``StepInput.idx_ulb`` indexes it
    device: torch.device
    total_steps: int = 1  # the run's length, for warm-ups over a fraction of training
    # class frequencies of the labeled split (sum 1), e.g. for distribution alignment
    labeled_distribution: tuple[float, ...] | None = None
    seed: int = 0  # the run's seed: an algorithm's own random draws (MixUp) start from it
    batch_size: int = 64  # the global labeled batch B, for schedules the official code counts in images


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

    x_lb: tuple[Tensor, ...]  # the labeled images' views, in the order Views.labeled names them
    y_lb: Tensor  # their labels
    x_ulb: tuple[Tensor, ...]  # the unlabeled images' views, in the order Views.unlabeled names them
    idx_ulb: Tensor  # (len(x_ulb[0]),) long: their indices into the unlabeled set
    step: int  # the optimisation step this batch is for (0-based)
    # The EMA model's forward where the run keeps one (None otherwise): for algorithms whose
    # targets come from the EMA model (FixMatch's mean-teacher ablation).
    ema_forward: EMAForward | None = None


class Algorithm(ABC):
    """One semi-supervised learning algorithm; subclasses set ``name``, ``metrics`` and, when they
    have options, ``Options``, and register themselves (built in: :func:`register`; another
    package: an entry point in the ``fixmatch_ray.algorithms`` group)."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options  # no options
    metrics: ClassVar[tuple[str, ...]]  # the names of train_step's metrics (shown as train_<name>)
    # μ of a run whose config leaves ``mu`` unset: the unlabeled batch is μ·B (the official
    # script's ratio: 7 for FixMatch, 1 where its unlabeled batch is B, e.g. Π-Model)
    mu: ClassVar[int] = 7
    # True: the run trains on every training label (its config's num_labeled is the train set)
    all_labels: ClassVar[bool] = False

    @classmethod
    def views(cls, options: Options) -> Views:
        """The views of each image this algorithm's step needs under ``options``."""
        return Views()

    @classmethod
    def heads(cls, options: Options) -> dict[str, int]:
        """Extra linear heads on the network's pooled features, ``name: outputs`` (e.g. ReMixMatch's
        rotation task); the run adds them to the model (trained, decayed, averaged and saved with
        it) and :class:`Forward` gives their logits by name."""
        return {}

    @classmethod
    def needs_ema(cls, options: Options) -> str | None:
        """Why ``options`` make the step use ``StepInput.ema_forward`` (the run must then keep an EMA
        model; the config says so with this reason), or None."""
        return None

    def __init__(self, options: Options, context: Context):
        self.options, self.context = options, context
        self.num_classes, self.num_unlabeled, self.device = context.num_classes, context.num_unlabeled, context.device

    @abstractmethod
    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the loss to backpropagate and this step's metrics, named as ``metrics`` says
        (0-dim, detached). No host sync (``.item()``, ``.tolist()``, ``nonzero``) in here: the
        loop reads metrics once per check interval."""

    def state_dict(self) -> dict[str, Any]:
        """The algorithm's own state, saved in every checkpoint (empty when stateless)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"algorithm {self.name!r} keeps no state, got keys {sorted(state)}")


def _valid(name: str, cls: object) -> str | None:
    problem = subclass_of(Algorithm)(name, cls)
    if problem is None and not getattr(cls, "metrics", None):
        problem = "it declares no metrics (a tuple of the names its train_step returns)"
    if problem is None and not issubclass(cls.Options, Options):  # type: ignore[union-attr]
        problem = "its Options must subclass fixmatch_ray.config.strict.Options"
    return problem


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm", _valid)
A = TypeVar("A", bound=type[Algorithm])


def register(cls: A) -> A:
    """Class decorator: make a built-in ``cls`` buildable by its ``name``."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute name = '<algorithm name>'")
    problem = _valid(name, cls)
    if problem:
        raise TypeError(f"{cls.__qualname__}: {problem}")
    return ALGORITHMS.add(name, cls)


def build_algorithm(name: str, options: Options, context: Context) -> Algorithm:
    """The registered algorithm ``name`` with its ``options``; an unknown name is a one-line ``ValueError``."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}: expected one of {', '.join(ALGORITHMS)}")
    cls = ALGORITHMS[name]
    if not isinstance(options, cls.Options):
        raise TypeError(f"algorithm {name!r} takes {cls.Options.__qualname__}, got {type(options).__qualname__}")
    return cls(options, context)
