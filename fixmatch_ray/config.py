"""One strict truth for a run's configuration.

A :class:`RunConfig` is built from YAML, a dict or the CLI; an unknown key, a wrong type or an
impossible value is a :class:`ConfigError` with one line that names the key, the bad value and
what would be right. The resolved config (seed drawn, dataset defaults filled) is saved with every
run and checkpoint, so a run can always be re-created from its own files.
"""
from __future__ import annotations

import dataclasses
import os
import random
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .data import DATASETS

ARCHS = ("wideresnet", "resnext")
AMP_MODES = ("off", "auto", "bf16", "fp16")
AUG_BACKENDS = ("pil", "tensor")


class ConfigError(ValueError):
    """A user mistake in a configuration: printed as one line, never as a traceback."""


# Network shape per (arch, dataset) as the reference code picks it; digits uses small nets.
ARCH_DEFAULTS: dict[tuple[str, str], dict[str, int]] = {
    ("wideresnet", "cifar10"): {"depth": 28, "width": 2},
    ("wideresnet", "cifar100"): {"depth": 28, "width": 8},
    ("wideresnet", "digits"): {"depth": 10, "width": 1},
    ("resnext", "cifar10"): {"depth": 29, "width": 4, "cardinality": 4},
    ("resnext", "cifar100"): {"depth": 29, "width": 64, "cardinality": 8},
    ("resnext", "digits"): {"depth": 11, "width": 4, "cardinality": 2},
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one FixMatch run. Batch sizes are per optimisation step, global."""

    dataset: str = "cifar10"
    data_dir: str = "data"
    download: bool = True
    num_labeled: int = 4000
    expand_labels: bool = False
    arch: str = "wideresnet"
    depth: int | None = None  # None: the reference depth for (arch, dataset)
    width: int | None = None  # widen factor k of WRN-28-k (ResNeXt: base width)
    cardinality: int | None = None  # ResNeXt only
    bn_momentum: float = 0.001  # the official 0.999 decay; short demo runs need a faster one
    total_steps: int = 2**20
    eval_step: int = 1024
    batch_size: int = 64  # B, labeled images per step
    mu: int = 7  # μ, unlabeled/labeled ratio: μB weak + μB strong images per step
    lr: float = 0.03
    warmup: float = 0.0  # warmup steps (the reference's flag, despite its help text)
    wdecay: float = 5e-4
    nesterov: bool = True
    momentum: float = 0.9
    use_ema: bool = True
    ema_decay: float = 0.999
    lambda_u: float = 1.0  # λu
    T: float = 1.0  # softmax temperature of the pseudo-labels
    threshold: float = 0.95  # τ, confidence threshold
    seed: int | None = None  # None: drawn once and saved, so the run can be repeated
    amp: str = "off"
    aug_backend: str = "pil"  # pil: per-image reference on CPU workers; tensor: batched on the device
    compile: bool = False  # torch.compile the model
    num_workers: int = 4  # data-loading processes
    eval_batch_size: int = 512
    device: str = "auto"
    out: str = "result"

    def __post_init__(self) -> None:
        _check_types(self)
        _check_values(self)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "run config") -> "RunConfig":
        """Strict: unknown keys and wrong types are errors (``where`` names the source)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                raise ConfigError(
                    f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(names))}"
                )
        return cls(**dict(data))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "RunConfig":
        return cls.from_dict(load_yaml(path), where=str(path))

    def resolved(self) -> "RunConfig":
        """A copy with the seed drawn and the network shape of the reference code filled in."""
        changes: dict[str, Any] = {}
        if self.seed is None:
            changes["seed"] = random.SystemRandom().randrange(2**31)
        for key, value in ARCH_DEFAULTS[(self.arch, self.dataset)].items():
            if getattr(self, key) is None:
                changes[key] = value
        return dataclasses.replace(self, **changes)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write as YAML atomically (a reader never sees half a file)."""
        from .storage import atomic_write_bytes

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write_bytes(Path(path), text.encode())

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].num_classes

    @property
    def unlabeled_batch_size(self) -> int:
        return self.mu * self.batch_size


def load_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file; a missing, unreadable, binary or non-UTF-8 file or bad syntax is a
    one-line :class:`ConfigError` naming the file."""
    try:
        data = Path(path).read_bytes()
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise ConfigError(f"{path}: UTF-16 text; save the file as UTF-8")
        if b"\0" in data:
            raise ConfigError(f"{path}: binary data, not a YAML text file")
        return yaml.safe_load(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a directory; expected a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save the file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{at}: {problem}") from None


def _check_types(cfg: Any) -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not _is_instance(value, hints[f.name]):
            raise ConfigError(
                f"{f.name}: expected {_type_name(hints[f.name])}, got {value!r} ({type(value).__name__})"
            )


def _is_instance(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:  # an int is a fine float; a bool is not a number here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        return isinstance(value, (list, tuple)) and all(_is_instance(v, inner) for v in value)
    if tp is Any:
        return True
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_values(c: RunConfig) -> None:
    _require(c.dataset in DATASETS, f"dataset: unknown {c.dataset!r}; expected one of {', '.join(DATASETS)}")
    _require(c.arch in ARCHS, f"arch: unknown {c.arch!r}; expected one of {', '.join(ARCHS)}")
    _require(c.amp in AMP_MODES, f"amp: unknown {c.amp!r}; expected one of {', '.join(AMP_MODES)}")
    _require(
        c.aug_backend in AUG_BACKENDS,
        f"aug_backend: unknown {c.aug_backend!r}; expected one of {', '.join(AUG_BACKENDS)}",
    )
    for name in ("total_steps", "eval_step", "batch_size", "mu", "eval_batch_size"):
        _require(getattr(c, name) > 0, f"{name}: must be a positive integer, got {getattr(c, name)}")
    for name in ("depth", "width", "cardinality"):
        v = getattr(c, name)
        _require(v is None or v > 0, f"{name}: must be a positive integer, got {v}")
    _require(c.num_workers >= 0, f"num_workers: must be >= 0, got {c.num_workers}")
    _require(c.lr > 0, f"lr: must be > 0, got {c.lr}")
    _require(c.warmup >= 0, f"warmup: must be >= 0 steps, got {c.warmup}")
    _require(c.wdecay >= 0, f"wdecay: must be >= 0, got {c.wdecay}")
    _require(0 <= c.momentum < 1, f"momentum: must be in [0, 1), got {c.momentum}")
    _require(0 <= c.ema_decay < 1, f"ema_decay: must be in [0, 1), got {c.ema_decay}")
    _require(c.lambda_u >= 0, f"lambda_u: must be >= 0, got {c.lambda_u}")
    _require(c.T > 0, f"T: must be > 0, got {c.T}")
    _require(0 < c.bn_momentum <= 1, f"bn_momentum: must be in (0, 1], got {c.bn_momentum}")
    _require(0 <= c.threshold <= 1, f"threshold: must be in [0, 1], got {c.threshold}")
    _require(c.seed is None or c.seed >= 0, f"seed: must be >= 0, got {c.seed}")
    spec = DATASETS[c.dataset]
    n = c.num_labeled
    _require(n > 0, f"num_labeled: must be a positive multiple of {spec.num_classes}, got {n}")
    _require(
        n % spec.num_classes == 0,
        f"num_labeled: {n} is not divisible by the {spec.num_classes} classes of {c.dataset} "
        "(the split is class-balanced)",
    )
    _require(
        n // spec.num_classes <= spec.min_class_count,
        f"num_labeled: {n} asks for {n // spec.num_classes} labels per class but {c.dataset} has "
        f"only {spec.min_class_count} training images in its smallest class "
        f"(at most {spec.min_class_count * spec.num_classes})",
    )
