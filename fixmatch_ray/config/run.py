"""One strict truth for a run's configuration.

A :class:`RunConfig` is built from YAML, a dict or the CLI; an unknown key, a wrong type or an
impossible value is a :class:`ConfigError` with one line that names the key, the bad value and
what would be right. The resolved config (seed drawn, dataset defaults filled) is saved with every
run and checkpoint, so a run can always be re-created from its own files. Each field carries its
``train`` CLI flag and help (:mod:`.cli` builds the parser from them).
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
from .strict import check_types, from_mapping, load_yaml, require

ARCHS = ("wideresnet", "resnext")


def algorithm_names() -> tuple[str, ...]:
    """The registered algorithms (imported on demand: the registry needs torch, the config does not)."""
    from ..algorithms import REGISTRY

    return tuple(REGISTRY)


def policy_names() -> tuple[str, ...]:
    """The registered augmentation policies (imported on demand, as the algorithms)."""
    from ..data.policies import POLICIES

    return tuple(POLICIES)


def policy_learns(name: str) -> bool:
    from ..data.policies import POLICIES

    return name in POLICIES and POLICIES[name].learns


def strong_aug_names() -> tuple[str, ...]:
    """The parts of the strong view a policy can be asked for (the official Cutout ablations)."""
    from ..data.policies.base import STRONG_AUGS

    return tuple(STRONG_AUGS)


AMP_MODES = ("off", "auto", "bf16", "fp16")
# The official ablations' knobs (google-research/fixmatch ablation/ab_fixmatch_*.py).
PSEUDO_LABELS = ("hard", "soft")  # ab_fixmatch_sharpen / ab_fixmatch_sharpen_conditional_consistency
TEACHERS = ("model", "ema", "ema_train")  # fixmatch / ab_fixmatch_meanteacher / ..._meanteacher_train
ANCHORINGS = ("weak.strong", "weak.weak", "strong.strong", "strong.weak")  # ab_fixmatch_anchoring
OPTIMIZERS = ("sgd", "adam")  # ab_fixmatch_momentum / ab_fixmatch_adam
LR_SCHEDULES = ("cosine", "linear")  # fixmatch / ab_fixmatch_linearlr
ADAM_BETAS = (0.9, 0.999)  # the defaults of ab_fixmatch_adam's flags
LINEAR_LR_END = 0.02  # the default of ab_fixmatch_linearlr's --lr_end
AUG_BACKENDS = ("auto", "pil", "tensor")
FLEX_MAPPINGS = ("convex", "linear", "concave")


def opt(default: Any, help: str, **cli: Any) -> Any:
    """A config field with its CLI flag's help (and argparse options: flag, action, choices...)."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. Batch sizes are per optimisation step, global."""

    dataset: str = opt("cifar10", "dataset (default cifar10)", choices=tuple(DATASETS))
    data_dir: str = opt("data", "where datasets live / are downloaded (default ./data)")
    download: bool = opt(True, "never download datasets", flag="--no-download", action="store_false")
    num_labeled: int = opt(4000, "number of labeled images (default 4000): spread by the class distribution, "
                           "the official split rule (class-balanced on CIFAR); STL-10 a fold of 1000")
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
    mu: int = opt(7, "μ: unlabeled batch is μ·B (default 7)")
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
    lambda_u: float = opt(1.0, "λu: weight of the unlabeled loss (default 1; 0 = supervised)")
    T: float = opt(1.0, "pseudo-label temperature (default 1)", flag="--T")
    threshold: float = opt(0.95, "τ: pseudo-label confidence threshold (default 0.95)")
    pseudo_label: str = opt("hard", "hard (default): argmax of softmax(logits/T), mask from that distribution "
                            "(ab_fixmatch_sharpen); soft: target softmax(logits/T), mask from the plain "
                            "softmax (ab_fixmatch_sharpen_conditional_consistency)", choices=PSEUDO_LABELS)
    teacher: str = opt("model", "weights that make the pseudo-labels: model (default), ema (the EMA model, "
                       "eval mode: ab_fixmatch_meanteacher), ema_train (EMA weights, batch statistics)",
                       choices=TEACHERS)
    algorithm: str = opt("fixmatch", "SSL algorithm (default fixmatch)", choices=algorithm_names)
    flex_warmup: bool = opt(True, "FlexMatch: threshold warm-up (default on)", action="bool")
    flex_mapping: str = opt("convex", "FlexMatch: mapping of the learning effect (default convex)",
                            choices=FLEX_MAPPINGS)
    policy: str = opt("randaugment", "strong augmentation policy (default randaugment)", choices=policy_names)
    strong_aug: str = opt("full", "parts of the strong view: full (default: the policy's ops, then Cutout), "
                          "no_cutout (ab_fixmatch_nocutout), cutout_only (ab_fixmatch_onlycutout)",
                          choices=strong_aug_names)
    anchoring: str = opt("weak.strong", "views of an unlabeled image: <pseudo-label view>.<trained view> "
                         "(default weak.strong; ab_fixmatch_anchoring)", choices=ANCHORINGS)
    seed: int | None = opt(None, "random seed (default: drawn and saved)")
    split_seed: int | None = opt(None, "seed of the labeled split alone (default: --seed); one split across "
                                 "seeds, as the official ablations' cifar10.3@250-1")
    amp: str = opt("off", "mixed precision: bare --amp = bf16 where supported, else fp16 + GradScaler",
                   choices=AMP_MODES, nargs="?", const="auto")
    aug_backend: str = opt("auto", "auto (default): tensor on a GPU, pil on the CPU; pil: per-image PIL on "
                           "data-loader processes (reference); tensor: batched on the device", choices=AUG_BACKENDS)
    compile: bool = opt(False, "torch.compile the model", action="store_true")
    num_workers: int = opt(4, "data-loading processes (default 4)")
    eval_batch_size: int = opt(512, "evaluation batch size (default 512)")
    device: str = opt("auto", "auto (default), cpu, cuda or cuda:N")
    checkpoint_every: int = opt(1, "evaluations per checkpoint (default 1; the last evaluation always saves one)")
    out: str = opt("result", "output directory (default ./result)")

    def __post_init__(self) -> None:
        check_types(self)
        _check_values(self)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "run config") -> "RunConfig":
        """Strict: unknown keys and wrong types are errors (``where`` names the source)."""
        return from_mapping(cls, data, where)

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
        return dataclasses.replace(self, **changes)

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write as YAML atomically (a reader never sees half a file)."""
        from ..storage import atomic_write_bytes

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write_bytes(Path(path), text.encode())

    def aug_backend_for(self, device_type: str) -> str:
        """The augmentation backend on a device of this type: ``auto`` is the batched device path on
        a GPU (the PIL path caps a GPU at ~20 steps/s) and for a policy that learns, PIL on the CPU."""
        if self.aug_backend != "auto":
            return self.aug_backend
        return "tensor" if device_type == "cuda" or policy_learns(self.policy) else "pil"

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].num_classes

    @property
    def unlabeled_batch_size(self) -> int:
        return self.mu * self.batch_size

    @property
    def labeled_split_seed(self) -> int | None:
        """The seed the labeled split is drawn from: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed


def _check_values(c: RunConfig) -> None:
    require(c.dataset in DATASETS, f"dataset: unknown {c.dataset!r}; expected one of {', '.join(DATASETS)}")
    require(c.arch in ARCHS, f"arch: unknown {c.arch!r}; expected one of {', '.join(ARCHS)}")
    require(c.amp in AMP_MODES, f"amp: unknown {c.amp!r}; expected one of {', '.join(AMP_MODES)}")
    for name, allowed in (("algorithm", algorithm_names()), ("policy", policy_names()), ("flex_mapping", FLEX_MAPPINGS),
                          ("pseudo_label", PSEUDO_LABELS), ("teacher", TEACHERS), ("strong_aug", strong_aug_names()),
                          ("anchoring", ANCHORINGS), ("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES)):
        value = getattr(c, name)
        require(value in allowed, f"{name}: unknown {value!r}; expected one of {', '.join(allowed)}")
    require(not (policy_learns(c.policy) and c.aug_backend == "pil"),
            f"policy: {c.policy} learns during training and needs aug_backend: tensor or auto (data-loader "
            "processes of the pil backend never see its updates)")
    require(
        c.aug_backend in AUG_BACKENDS,
        f"aug_backend: unknown {c.aug_backend!r}; expected one of {', '.join(AUG_BACKENDS)}",
    )
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
    require(c.lambda_u >= 0, f"lambda_u: must be >= 0, got {c.lambda_u}")
    require(c.T > 0, f"T: must be > 0, got {c.T}")
    require(0 < c.bn_momentum <= 1, f"bn_momentum: must be in (0, 1], got {c.bn_momentum}")
    require(0 <= c.threshold <= 1, f"threshold: must be in [0, 1], got {c.threshold}")
    require(c.seed is None or c.seed >= 0, f"seed: must be >= 0, got {c.seed}")
    require(c.split_seed is None or c.split_seed >= 0, f"split_seed: must be >= 0, got {c.split_seed}")
    _check_ablation_values(c)
    spec = DATASETS[c.dataset]
    problem = spec.check_num_labeled(c.num_labeled)
    require(problem is None, f"num_labeled: {problem}")
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
    require(c.teacher == "model" or c.use_ema,
            f"teacher: {c.teacher} takes pseudo-labels from the EMA model; it needs use_ema: true")
    for name, default in (("pseudo_label", "hard"), ("teacher", "model")):
        require(getattr(c, name) == default or c.algorithm == "fixmatch",
                f"{name}: {getattr(c, name)} is a FixMatch ablation; algorithm {c.algorithm} supports "
                f"{name}: {default} only")
