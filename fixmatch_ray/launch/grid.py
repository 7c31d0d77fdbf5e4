"""Sweep files: one strict YAML grid expanded into validated trials (no Ray here).

    name: fixmatch-paper
    storage: results                 # local dir, s3://..., gs://..., or a shared mount
    base: {total_steps: 1048576}     # RunConfig keys for every trial
    grid:                            # blocks; a list value inside a block is an axis
      - {dataset: cifar10, num_labeled: [40, 250, 4000], wdecay: 0.0005}
    seeds: [1, 2, 3, 4, 5]
    axes: {lambda_u: [1.0, 0.0]}     # optional axes crossed with every block
    resources: {workers: 1, gpus_per_worker: 1, cpus_per_worker: 4}

Every trial's RunConfig is built and checked here, so a bad value fails before Ray starts.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config import ConfigError, RunConfig, load_yaml

SWEEP_KEYS = ("name", "storage", "base", "grid", "seeds", "axes", "resources", "max_concurrent_trials",
              "trial_retries", "worker_retries")
RESOURCE_KEYS = ("workers", "cpus_per_worker", "gpus_per_worker", "custom_per_worker")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@=-]*$")


@dataclass(frozen=True)
class TrialResources:
    workers: int = 1  # DDP workers per trial
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # 0: CPU training; a fraction lets small trials share a GPU
    # custom Ray resources per worker, e.g. {"accelerator_type:A100": 0.001} to pin a GPU type
    custom_per_worker: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Trial:
    label: str  # the setting, e.g. "cifar10@40" or "digits@20 lambda_u=0.0"
    seed: int
    setting: dict[str, Any]  # the axis values that define the setting (seed excluded)
    run: RunConfig

    @property
    def name(self) -> str:
        return f"{self.label.replace(' ', '_')}.s{self.seed}"


@dataclass(frozen=True)
class SweepSpec:
    name: str
    storage: str = "results"
    base: dict[str, Any] = field(default_factory=dict)
    grid: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [1])
    axes: dict[str, list[Any]] = field(default_factory=dict)
    resources: TrialResources = TrialResources()
    max_concurrent_trials: int | None = None
    trial_retries: int = 2  # Tune: a trial whose Train run failed for good is started again
    worker_retries: int = 3  # Train: worker failures recovered inside one trial
    trials: tuple[Trial, ...] = ()

    def experiment_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"


def _fail(where: str, msg: str) -> None:
    raise ConfigError(f"{where}: {msg}")


def _expect(value: Any, types: type | tuple, where: str, what: str) -> None:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in _as_tuple(types))
    if not ok:
        _fail(where, f"expected {what}, got {value!r}")


def _as_tuple(t: type | tuple) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def parse_sweep(doc: Any, where: str = "sweep", overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Validate a parsed sweep document and expand it into trials."""
    _expect(doc, dict, where, "a mapping with keys " + ", ".join(SWEEP_KEYS))
    doc = {**doc, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    for key in doc:
        if key not in SWEEP_KEYS:
            _fail(where, f"unknown key {key!r}; valid keys: {', '.join(SWEEP_KEYS)}")
    if "name" not in doc or "grid" not in doc:
        _fail(where, "'name' and 'grid' are required")
    name = doc["name"]
    _expect(name, str, f"{where}: name", "a string")
    if not _NAME.match(name):
        _fail(f"{where}: name", f"{name!r} must be letters, digits and _.@=- (it names a directory)")
    storage = doc.get("storage", "results")
    _expect(storage, str, f"{where}: storage", "a path or URI")
    base = doc.get("base") or {}
    _expect(base, dict, f"{where}: base", "a mapping of run-config keys")
    grid = doc["grid"]
    _expect(grid, list, f"{where}: grid", "a list of blocks")
    if not grid:
        _fail(f"{where}: grid", "is empty; give at least one block")
    seeds = doc.get("seeds", [1])
    _expect(seeds, list, f"{where}: seeds", "a list of integers")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        _fail(f"{where}: seeds", f"expected a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        _fail(f"{where}: seeds", f"{seeds!r} repeats a seed")
    axes = doc.get("axes") or {}
    _expect(axes, dict, f"{where}: axes", "a mapping of run-config key to a list of values")
    for k, v in axes.items():
        if not isinstance(v, list) or not v:
            _fail(f"{where}: axes.{k}", f"expected a non-empty list of values, got {v!r}")
    resources = _parse_resources(doc.get("resources") or {}, f"{where}: resources")
    mct = doc.get("max_concurrent_trials")
    if mct is not None:
        _expect(mct, int, f"{where}: max_concurrent_trials", "a positive integer")
        if mct < 1:
            _fail(f"{where}: max_concurrent_trials", f"expected a positive integer, got {mct}")
    retries = {}
    for key, default in (("trial_retries", 2), ("worker_retries", 3)):
        retries[key] = doc.get(key, default)
        _expect(retries[key], int, f"{where}: {key}", "an integer >= -1 (-1: forever)")
        if retries[key] < -1:
            _fail(f"{where}: {key}", f"expected an integer >= -1, got {retries[key]}")
    spec = SweepSpec(name, storage, base, grid, seeds, axes, resources, mct, **retries)
    return dataclasses.replace(spec, trials=tuple(_expand(spec, where)))


def _parse_resources(doc: Any, where: str) -> TrialResources:
    _expect(doc, dict, where, "a mapping with keys " + ", ".join(RESOURCE_KEYS))
    for key in doc:
        if key not in RESOURCE_KEYS:
            _fail(where, f"unknown key {key!r}; valid keys: {', '.join(RESOURCE_KEYS)}")
    workers = doc.get("workers", 1)
    _expect(workers, int, f"{where}.workers", "a positive integer")
    if workers < 1:
        _fail(f"{where}.workers", f"expected a positive integer, got {workers}")
    cpus, gpus = doc.get("cpus_per_worker", 1.0), doc.get("gpus_per_worker", 0.0)
    _expect(cpus, (int, float), f"{where}.cpus_per_worker", "a number > 0")
    _expect(gpus, (int, float), f"{where}.gpus_per_worker", "a number >= 0")
    if cpus <= 0:
        _fail(f"{where}.cpus_per_worker", f"expected a number > 0, got {cpus}")
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        _fail(f"{where}.gpus_per_worker", f"expected 0, a fraction of one GPU, or a whole number, got {gpus}")
    custom = doc.get("custom_per_worker", {})
    _expect(custom, dict, f"{where}.custom_per_worker", "a mapping of resource name to amount")
    for k, v in custom.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            _fail(f"{where}.custom_per_worker", f"expected resource name: amount > 0, got {k!r}: {v!r}")
    return TrialResources(workers, float(cpus), float(gpus), {k: float(v) for k, v in custom.items()})


def _expand(spec: SweepSpec, where: str) -> list[Trial]:
    trials, seen = [], set()
    for i, block in enumerate(spec.grid):
        bw = f"{where}: grid[{i}]"
        _expect(block, dict, bw, "a mapping of run-config keys (a list value is an axis)")
        if "seed" in block or "seed" in spec.axes or "seed" in spec.base:
            _fail(bw, "'seed' belongs in the top-level 'seeds' list")
        fixed = {k: v for k, v in block.items() if not isinstance(v, list)}
        block_axes = {k: v for k, v in block.items() if isinstance(v, list)}
        for k, v in block_axes.items():
            if not v:
                _fail(f"{bw}.{k}", "is an empty list")
        all_axes = {**block_axes, **spec.axes}
        keys = list(all_axes)
        for values in itertools.product(*(all_axes[k] for k in keys)):
            setting = {"dataset": {**spec.base, **fixed}.get("dataset", RunConfig.dataset), **dict(zip(keys, values))}
            for seed in spec.seeds:
                run_dict = {**spec.base, **fixed, **dict(zip(keys, values)), "seed": seed}
                try:
                    run = RunConfig.from_dict(run_dict, where=bw).resolved()
                except ConfigError as e:
                    msg = str(e)
                    raise ConfigError(msg if msg.startswith(bw) else f"{bw}: {msg}") from None
                trial = Trial(_label(setting), seed, setting, run)
                if trial.name in seen:
                    _fail(bw, f"setting {trial.label} seed {seed} appears twice in the grid")
                seen.add(trial.name)
                trials.append(trial)
    _check_workers(spec, trials, where)
    return trials


def _label(setting: dict[str, Any]) -> str:
    head = f"{setting['dataset']}@{setting['num_labeled']}" if "num_labeled" in setting else setting["dataset"]
    rest = [f"{k}={v}" for k, v in setting.items() if k not in ("dataset", "num_labeled")]
    return " ".join([head, *rest])


def _check_workers(spec: SweepSpec, trials: list[Trial], where: str) -> None:
    from .worker import Resources  # the one divisibility check, shared with the train CLI

    for t in trials:
        try:
            Resources(workers=spec.resources.workers).check(t.run)
        except ConfigError as e:
            _fail(f"{where}: resources.workers", f"{t.label}: {e}")


def load_sweep(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep file; every problem is a one-line :class:`ConfigError`."""
    return parse_sweep(load_yaml(path), where=str(path), overrides=overrides)
