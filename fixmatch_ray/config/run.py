"""One strict truth for a run's configuration.

A :class:`RunConfig` is built from YAML, a dict or the CLI; an unknown key, a wrong type or an
impossible value is a :class:`ConfigError` with one line that names the key, the bad value and
what would be right. The resolved config (seed drawn, dataset defaults filled) is saved with every
run and checkpoint, so a run can always be re-created from its own files. Each field carries its
``train`` CLI flag and help (:mod:`.cli` builds the parser from them).

The selected algorithm's own options (its ``Options``: FixMatch's τ, λu, T...) are keys of the
same flat mapping: :meth:`RunConfig.from_dict` gives each key to the config or the options (a key
neither knows is an error listing both); :meth:`RunConfig.to_dict` writes both back.
"""
from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..data.datasets import DATASETS
from ..errors import ConfigError
from .algorithm_defaults import fill_algorithm_defaults
from .cli import opt
from .datakeys import check_data_keys, labels_arg
from .strict import check_types, from_mapping, keys_of, load_yaml, require

ARCHS = ("wideresnet", "resnext")


def algorithm_names() -> tuple[str, ...]:
    """The registered algorithms (imported on demand: the registry needs torch, the config does not)."""
    from ..algorithms import ALGORITHMS

    return ALGORITHMS.names()


def algorithm_class(name: str) -> Any:
    """The registered algorithm ``name``, its ``Options`` checked against the run config's keys."""
    from ..algorithms import ALGORITHMS

    require(name in ALGORITHMS, f"algorithm: unknown {name!r}; expected one of {', '.join(ALGORITHMS)}")
    cls = ALGORITHMS[name]
    clash = sorted(set(keys_of(cls.Options)) & set(keys_of(RunConfig)))
    require(not clash, f"algorithm {name}: its option(s) {', '.join(clash)} have the name of a run-config key; "
            "rename them in its Options")
    return cls


def algorithm_option_names(name: str) -> list[str]:
    """The option keys of algorithm ``name`` (empty when it is not installed here)."""
    return keys_of(algorithm_class(name).Options) if name in algorithm_names() else []


def defaults_of(algorithm: str) -> dict[str, Any]:
    """Every key's default for a run of ``algorithm`` (the run config's and its options'; the run
    config's alone when the algorithm is not installed here)."""
    if algorithm not in algorithm_names():
        return RunConfig().to_dict() | {"algorithm": algorithm}
    return RunConfig(algorithm=algorithm).to_dict()


def dataset_names() -> tuple[str, ...]:
    return tuple(DATASETS)


def policy_names() -> tuple[str, ...]:
    """The registered augmentation policies (imported on demand, as the algorithms)."""
    from ..data.policies import POLICIES

    return tuple(POLICIES)


def policy_backends(name: str) -> frozenset[str]:
    """The augmentation backends policy ``name`` implements (``pil``, ``tensor``)."""
    from ..data.policies import POLICIES

    return POLICIES[name].backends if name in POLICIES else frozenset(AUG_BACKENDS[1:])


def strong_aug_names() -> tuple[str, ...]:
    """The parts of the strong view a policy can be asked for (the official Cutout ablations)."""
    from ..data.policies.base import STRONG_AUGS

    return tuple(STRONG_AUGS)


AMP_MODES = ("off", "auto", "bf16", "fp16")
# The official ablations' knobs (google-research/fixmatch ablation/ab_fixmatch_*.py); FixMatch's
# own (pseudo-labels, teacher, anchoring) are its options (algorithms/fixmatch.py).
OPTIMIZERS = ("sgd", "adam")  # ab_fixmatch_momentum / ab_fixmatch_adam
LR_SCHEDULES = ("cosine", "linear")  # fixmatch / ab_fixmatch_linearlr
ADAM_BETAS = (0.9, 0.999)  # the defaults of ab_fixmatch_adam's flags
LINEAR_LR_END = 0.02  # the default of ab_fixmatch_linearlr's --lr_end
AUG_BACKENDS = ("auto", "pil", "tensor")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. Batch sizes are per optimisation step, global."""

    dataset: str = opt("cifar10", "dataset (default cifar10)", choices=dataset_names)
    data_dir: str = opt("data", "where datasets live / are downloaded (default ./data)")
    download: bool = opt(True, "never download datasets", flag="--no-download", action="store_false")
    num_labeled: int | str | None = opt(None, "labeled images (default 4000; all: every one, the default of "
                                        "fullysupervised): spread by the class distribution, the official split "
                                        "rule (class-balanced on CIFAR); STL-10 a fold of 1000", type=labels_arg)
    image_size: int | None = opt(None, "dataset folder: resize images to this side (default: their own)")
    val_size: int | None = opt(None, "labeled training images held out for validation (default none)")
    expand_labels: bool = opt(False, "repeat labeled images to fill an epoch", action="store_true")
    arch: str = opt("wideresnet", "network (default wideresnet)", choices=ARCHS)
    depth: int | None = opt(None, "network depth (default: the reference's for the dataset)")
    width: int | None = opt(None, "widen factor k (ResNeXt: base width)")
    cardinality: int | None = opt(None, "ResNeXt cardinality")
    scales: int | None = opt(None, "wideresnet stages (default: the reference's for the dataset, else 3)")
    bn_momentum: float = opt(0.001, "BatchNorm momentum (default 0.001, the official 0.999 decay)")
    total_steps: int = opt(2**20, "optimisation steps (default 2^20)")
    eval_step: int = opt(1024, "steps between evaluations (default 1024)")
    batch_size: int = opt(64, "labeled batch B per step, global (default 64)")
    mu: int | None = opt(None, "μ: unlabeled batch is μ·B (default: the algorithm's, fixmatch 7, the baselines 1)")
    lr: float = opt(0.03, "initial learning rate (default 0.03)")
    # warmup steps (the reference's flag, despite its help text there)
    warmup: float = opt(0.0, "warmup steps (default 0)")
    wdecay: float = opt(5e-4, "weight decay (default 5e-4; paper uses 1e-3 on CIFAR-100)")
    nesterov: bool = opt(True, "Nesterov momentum (default on)", action="bool")
    momentum: float = opt(0.9, "SGD momentum (default 0.9)")
    optimizer: str = opt("sgd", "sgd (default: momentum, Nesterov) or adam (TF1 Adam, weight decay as an L2 "
                         "term: ab_fixmatch_adam; its lr is 0.002); adam ignores momentum/nesterov",
                         choices=OPTIMIZERS)
    beta1: float | None = opt(None, "Adam β1 (default 0.9; optimizer adam only)")
    beta2: float | None = opt(None, "Adam β2 (default 0.999; optimizer adam only); β2 = 0 takes ε = 1e-4, "
                              "otherwise ε = 1e-8, as ab_fixmatch_adam")
    lr_schedule: str = opt("cosine", "cosine (default: lr·cos(7πk/16K)) or linear (lr → lr_end: "
                           "ab_fixmatch_linearlr)", choices=LR_SCHEDULES)
    lr_end: float | None = opt(None, f"final learning rate of lr_schedule linear (default {LINEAR_LR_END}, "
                               "the official flag's)")
    use_ema: bool = opt(True, "evaluate an EMA model (default on)", action="bool")
    ema_decay: float = opt(0.999, "EMA decay (default 0.999)")
    algorithm: str = opt("fixmatch", "SSL algorithm (default fixmatch); its options are keys and flags "
                         "too (below)", choices=algorithm_names)
    policy: str = opt("randaugment", "strong augmentation policy (default randaugment)", choices=policy_names)
    strong_aug: str = opt("full", "parts of the strong view: full (default: the policy's ops, then Cutout), "
                          "no_cutout (ab_fixmatch_nocutout), cutout_only (ab_fixmatch_onlycutout)",
                          choices=strong_aug_names)
    seed: int | None = opt(None, "random seed (default: drawn and saved)")
    split_seed: int | None = opt(None, "seed of the labeled split alone (default: --seed); one split across "
                                 "seeds, as the official ablations' cifar10.3@250-1")
    amp: str = opt("off", "mixed precision: bare --amp = bf16 where supported, else fp16 + GradScaler",
                   choices=AMP_MODES, nargs="?", const="auto")
    aug_backend: str = opt("auto", "auto (default): tensor on a GPU, pil on the CPU; pil: per-image PIL on "
                           "data-loader processes (reference); tensor: batched on the device", choices=AUG_BACKENDS)
    compile: bool = opt(False, "torch.compile the model", action="store_true")
    tf32: bool = opt(True, "CUDA: fp32 convolutions and matmuls on TF32 tensor cores (default on, PyTorch's own "
                     "default for convolutions); --no-tf32: IEEE fp32, the official arithmetic, several times "
                     "slower per convolution", action="bool")
    cuda_graphs: bool = opt(True, "CUDA, aug_backend tensor: replay each step's augmentation as one captured "
                            "CUDA graph (the same kernels and random stream as eager, without ~300-1,800 "
                            "launches a step); off on the CPU", action="bool")
    num_workers: int = opt(4, "data-loading processes (default 4)")
    eval_batch_size: int = opt(512, "evaluation batch size (default 512)")
    device: str = opt("auto", "auto (default), cpu, cuda or cuda:N")
    checkpoint_every: int = opt(1, "evaluations per checkpoint (default 1; the last evaluation always saves one)")
    out: str = opt("result", "output directory (default ./result)")
    # the algorithm's own options (its Options dataclass; None: its defaults), keys of the same mapping
    options: Any = field(default=None, metadata={"internal": True})

    def __post_init__(self) -> None:
        check_types(self)
        options_type = algorithm_class(self.algorithm).Options
        if self.options is None:
            object.__setattr__(self, "options", options_type())
        require(type(self.options) is options_type, f"options: algorithm {self.algorithm} takes "
                f"{options_type.__qualname__}, got {type(self.options).__qualname__}")
        fill_algorithm_defaults(self, algorithm_class(self.algorithm))
        _check_values(self)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "run config") -> "RunConfig":
        """Strict: unknown keys and wrong types are errors (``where`` names the source). The keys of
        the selected algorithm's options go to its ``Options``."""
        algorithm = data.get("algorithm", cls.algorithm) if isinstance(data, Mapping) else None
        if not isinstance(algorithm, str):  # not a mapping, or a mistyped algorithm: the plain loader says so
            return from_mapping(cls, data, where)
        options_type = algorithm_class(algorithm).Options
        run_keys, option_keys = set(keys_of(cls)), set(keys_of(options_type))
        for key in data:
            if key not in run_keys and key not in option_keys:
                raise ConfigError(_unknown_key(where, key, algorithm, run_keys | option_keys))
        options = from_mapping(options_type, {k: v for k, v in data.items() if k in option_keys}, where)
        return from_mapping(cls, {k: v for k, v in data.items() if k in run_keys}, where, options=options)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "RunConfig":
        return cls.from_dict(load_yaml(path), where=str(path))

    def resolved(self) -> "RunConfig":
        """A copy with the seed drawn and the network shape of the reference code filled in."""
        changes: dict[str, Any] = {}
        if self.seed is None:
            changes["seed"] = random.SystemRandom().randrange(DATASETS[self.dataset].num_seeds or 2**31)
        for key, value in DATASETS[self.dataset].arch_defaults.get(self.arch, {}).items():
            if getattr(self, key) is None:
                changes[key] = value
        if self.optimizer == "adam":
            changes.update({k: v for k, v in zip(("beta1", "beta2"), ADAM_BETAS) if getattr(self, k) is None})
        if self.lr_schedule == "linear" and self.lr_end is None:
            changes["lr_end"] = LINEAR_LR_END
        return dataclasses.replace(self, **changes)

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with run-config keys and the algorithm's options changed; a new ``algorithm``
        keeps the values of the options it shares with the old one."""
        algorithm = changes.get("algorithm", self.algorithm)
        option_keys = set(keys_of(algorithm_class(algorithm).Options))
        option_changes = {k: changes.pop(k) for k in list(changes) if k in option_keys}
        if "options" not in changes and (option_changes or algorithm != self.algorithm):
            kept = {k: v for k, v in dataclasses.asdict(self.options).items() if k in option_keys}
            changes["options"] = from_mapping(algorithm_class(algorithm).Options, {**kept, **option_changes},
                                              "options")
        return dataclasses.replace(self, **changes)

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every key with its value, the algorithm's options right after ``algorithm``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name != "options":
                out[f.name] = getattr(self, f.name)
            if f.name == "algorithm":
                out.update(dataclasses.asdict(self.options))
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write as YAML atomically (a reader never sees half a file)."""
        from ..storage import atomic_write_bytes

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write_bytes(Path(path), text.encode())

    def aug_backend_for(self, device_type: str) -> str:
        """The augmentation backend on a device of this type: ``auto`` is the batched device path on
        a GPU (the PIL path caps a GPU at ~20 steps/s), PIL on the CPU, each where the policy
        implements it (else the other one: a policy that learns has only the device path)."""
        if self.aug_backend != "auto":
            return self.aug_backend
        backends = policy_backends(self.policy)
        preferred = "tensor" if device_type == "cuda" else "pil"
        return preferred if preferred in backends else next(b for b in AUG_BACKENDS[1:] if b in backends)

    @property
    def views(self) -> Any:
        """The views the algorithm's step needs of each image (:class:`~fixmatch_ray.algorithms.Views`)."""
        return algorithm_class(self.algorithm).views(self.options)

    dataset_spec = property(lambda self: DATASETS[self.dataset].of_files(self.data_dir, self.image_size))
    num_classes = property(lambda self: self.dataset_spec.num_classes)  # a folder dataset's: from its files

    @property
    def unlabeled_batch_size(self) -> int:
        return self.mu * self.batch_size

    @property
    def labeled_split_seed(self) -> int | None:
        """The seed the labeled split is drawn from: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed


def _unknown_key(where: str, key: str, algorithm: str, valid: set[str]) -> str:
    """The one line for a key neither the run config nor the algorithm knows (naming the algorithms
    that do have it as an option)."""
    others = [name for name in algorithm_names() if name != algorithm and key in algorithm_option_names(name)]
    why = (f"{key!r} is an option of {', '.join(others)}, not of algorithm {algorithm}" if others
           else f"unknown key {key!r}")
    return f"{where}: {why}; valid keys: {', '.join(sorted(valid))}"


def _check_values(c: RunConfig) -> None:
    require(c.dataset in DATASETS, f"dataset: unknown {c.dataset!r}; expected one of {', '.join(DATASETS)}")
    require(c.arch in ARCHS, f"arch: unknown {c.arch!r}; expected one of {', '.join(ARCHS)}")
    require(c.amp in AMP_MODES, f"amp: unknown {c.amp!r}; expected one of {', '.join(AMP_MODES)}")
    for name, allowed in (("policy", policy_names()), ("strong_aug", strong_aug_names()),
                          ("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES)):
        value = getattr(c, name)
        require(value in allowed, f"{name}: unknown {value!r}; expected one of {', '.join(allowed)}")
    require(
        c.aug_backend in AUG_BACKENDS,
        f"aug_backend: unknown {c.aug_backend!r}; expected one of {', '.join(AUG_BACKENDS)}",
    )
    _check_backend(c)
    for name in ("total_steps", "eval_step", "batch_size", "mu", "eval_batch_size", "checkpoint_every"):
        require(getattr(c, name) > 0, f"{name}: must be a positive integer, got {getattr(c, name)}")
    for name in ("depth", "width", "cardinality", "scales"):
        v = getattr(c, name)
        require(v is None or v > 0, f"{name}: must be a positive integer, got {v}")
    require(c.num_workers >= 0, f"num_workers: must be >= 0, got {c.num_workers}")
    require(c.lr > 0, f"lr: must be > 0, got {c.lr}")
    require(c.warmup >= 0, f"warmup: must be >= 0 steps, got {c.warmup}")
    require(c.wdecay >= 0, f"wdecay: must be >= 0, got {c.wdecay}")
    require(0 <= c.momentum < 1, f"momentum: must be in [0, 1), got {c.momentum}")
    require(0 <= c.ema_decay < 1, f"ema_decay: must be in [0, 1), got {c.ema_decay}")
    require(0 < c.bn_momentum <= 1, f"bn_momentum: must be in (0, 1], got {c.bn_momentum}")
    require(c.seed is None or c.seed >= 0, f"seed: must be >= 0, got {c.seed}")
    require(c.split_seed is None or c.split_seed >= 0, f"split_seed: must be >= 0, got {c.split_seed}")
    _check_ablation_values(c)
    spec = DATASETS[c.dataset]
    check_data_keys(c, spec)
    problem = None if c.seed is None else spec.check_seed(c.seed)
    require(problem is None, f"seed: {problem}")
    scales = c.scales or spec.arch_defaults.get(c.arch, {}).get("scales", 3)
    if c.arch == "wideresnet" and c.depth is not None:  # models.wideresnet's rule, checked before torch loads
        fits = c.depth >= 1 + 3 * scales and (c.depth - 1 - scales) % (2 * scales) == 0
        require(fits, f"depth: {c.depth} does not fit a wideresnet of {scales} scales; expected 1 + {scales}·(2n+1): "
                f"{', '.join(str(1 + scales * (2 * n + 1)) for n in range(1, 5))}, ... (or set scales)")
    require(c.scales is None or c.arch == "wideresnet", f"scales: applies to wideresnet only, not {c.arch}")
    missing = [k for k in ("depth", "width") if getattr(c, k) is None and k not in spec.arch_defaults.get(c.arch, {})]
    require(not missing, f"{'/'.join(missing)}: {c.arch} has no default shape for {c.dataset}; set "
             f"{' and '.join(missing)} (e.g. depth: 28, width: 2)")


def _check_ablation_values(c: RunConfig) -> None:
    """The official ablations' knobs: a value that would be ignored is an error, not a no-op."""
    for name in ("beta1", "beta2"):
        v = getattr(c, name)
        require(v is None or c.optimizer == "adam", f"{name}: only used by optimizer: adam (got optimizer: {c.optimizer})")
        require(v is None or 0 <= v < 1, f"{name}: must be in [0, 1), got {v}")
    require(c.lr_end is None or c.lr_schedule == "linear",
            f"lr_end: only used by lr_schedule: linear (got lr_schedule: {c.lr_schedule})")
    require(c.lr_end is None or c.lr_end >= 0, f"lr_end: must be >= 0, got {c.lr_end}")
    require(not (c.optimizer == "sgd" and c.nesterov and c.momentum == 0),
            "nesterov: Nesterov momentum needs momentum > 0; set nesterov: false for plain SGD (momentum 0)")
    why = algorithm_class(c.algorithm).needs_ema(c.options)
    require(not why or c.use_ema, f"{why}; it needs use_ema: true")


def _check_backend(c: RunConfig) -> None:
    """An ``aug_backend`` the policy does not implement is refused here, before anything runs."""
    backends = policy_backends(c.policy)
    if c.aug_backend == "auto" or c.aug_backend in backends:
        return
    from ..data.policies import POLICIES

    reason = (" (it learns during training: data-loader processes of the pil backend would never see its updates)"
              if c.policy in POLICIES and POLICIES[c.policy].learns else "")
    raise ConfigError(f"aug_backend: policy {c.policy} does not implement the {c.aug_backend} backend{reason}; "
                      f"use aug_backend: auto or {' or '.join(sorted(backends))}")
