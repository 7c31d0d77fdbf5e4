"""Sweep files: one strict YAML grid expanded into validated trials (no Ray here).

    name: fixmatch-paper
    storage: results                 # local dir, s3://..., gs://..., or a shared mount
    base: {total_steps: 1048576}     # RunConfig keys for every trial
    grid:                            # blocks; a list value inside a block is an axis
      - {dataset: cifar10, num_labeled: [40, 250, 4000], wdecay: 0.0005}
    seeds: [1, 2, 3, 4, 5]
    axes: {lambda_u: [1.0, 0.0]}     # optional axes crossed with every block
    resources: {workers: 1, gpus_per_worker: 1, cpus_per_worker: 4}
    tracking: {mlflow: {tracking_uri: "sqlite:///mlflow.db"}}   # optional: MLflow / W&B

The file's keys are the fields of :class:`SweepSpec`, read by the same strict loader as run
configs; every trial's RunConfig is built and checked here, so a bad value fails before Ray starts.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError
from .resources import Resources
from .run import RunConfig
from .strict import check_types, from_mapping, load_yaml
from .tracking import TrackingSpec

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@=-]*$")


@dataclass(frozen=True)
class TrialSpec:
    """One trial as the sweep file defines it (a setting and a seed); Ray Tune's ``Trial`` runs it."""

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
    grid: list[dict[str, Any]]
    storage: str = "results"
    base: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [1])
    axes: dict[str, list[Any]] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    max_concurrent_trials: int | None = None
    trial_retries: int = 2  # Tune: a trial whose Train run failed for good is started again
    worker_retries: int = 3  # Train: worker failures recovered inside one trial
    tracking: TrackingSpec = field(default_factory=TrackingSpec)  # MLflow / W&B besides TensorBoard
    trials: tuple[TrialSpec, ...] = field(default=(), metadata={"internal": True})  # expanded, not a file key

    def __post_init__(self) -> None:
        check_types(self)
        _check(self)

    def experiment_path(self) -> str:
        from ..storage import join

        return join(self.storage, self.name)


def _fail(where: str, msg: str) -> None:
    raise ConfigError(f"{where}: {msg}")


def _check(s: SweepSpec) -> None:
    if not _NAME.match(s.name):
        _fail("name", f"{s.name!r} must be letters, digits and _.@=- (it names a directory)")
    if not s.grid:
        _fail("grid", "is empty; give at least one block")
    if not s.seeds or any(seed < 0 for seed in s.seeds):
        _fail("seeds", f"expected a non-empty list of integers >= 0, got {s.seeds!r}")
    if len(set(s.seeds)) != len(s.seeds):
        _fail("seeds", f"{s.seeds!r} repeats a seed")
    for k, v in s.axes.items():
        if not v:
            _fail(f"axes.{k}", f"expected a non-empty list of values, got {v!r}")
    if s.max_concurrent_trials is not None and s.max_concurrent_trials < 1:
        _fail("max_concurrent_trials", f"expected a positive integer, got {s.max_concurrent_trials}")
    for key in ("trial_retries", "worker_retries"):
        if getattr(s, key) < -1:
            _fail(key, f"expected an integer >= -1 (-1: forever), got {getattr(s, key)}")


def parse_sweep(doc: Any, where: str = "sweep", overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Validate a parsed sweep document and expand it into trials."""
    if not isinstance(doc, dict):
        _fail(where, f"expected a mapping with keys {', '.join(_file_keys())}, got {type(doc).__name__}")
    doc = {**doc, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    if "name" not in doc or "grid" not in doc:
        _fail(where, "'name' and 'grid' are required")
    doc = {k: ({} if v is None and k in ("base", "axes", "resources", "tracking") else v) for k, v in doc.items()}
    try:
        spec = from_mapping(SweepSpec, doc, where)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    _refuse_device(spec, where)
    return dataclasses.replace(spec, trials=tuple(_expand(spec, where)))


def _refuse_device(spec: SweepSpec, where: str) -> None:
    """A run config's ``device`` has no meaning in a sweep: Ray Train gives each worker its device
    (a GPU per ``resources.gpus_per_worker``, else the CPU), so the key would be silently ignored."""
    places = [("base", spec.base), *((f"grid[{i}]", b) for i, b in enumerate(spec.grid)), ("axes", spec.axes)]
    for name, block in places:
        if "device" in block:
            _fail(f"{where}: {name}.device", "a sweep's resources decide its trials' devices (Ray Train gives each "
                  "worker a GPU when resources.gpus_per_worker > 0, else the CPU); remove 'device'")


def _file_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(SweepSpec) if not f.metadata.get("internal")]


def _expand(spec: SweepSpec, where: str) -> list[TrialSpec]:
    trials, seen = [], set()
    for i, block in enumerate(spec.grid):
        bw = f"{where}: grid[{i}]"
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
                trial = TrialSpec(_label(setting), seed, setting, run)
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



def _check_workers(spec: SweepSpec, trials: list[TrialSpec], where: str) -> None:
    for t in trials:
        try:
            spec.resources.check(t.run)
        except ConfigError as e:
            _fail(f"{where}: resources.workers", f"{t.label}: {e}")


def load_sweep(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep file; every problem is a one-line :class:`ConfigError`."""
    return parse_sweep(load_yaml(path), where=str(path), overrides=overrides)
