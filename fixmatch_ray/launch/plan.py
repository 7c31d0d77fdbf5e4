"""A sweep's plan before the spend: trials, resources, how many run at once, GPU-hours, wall time.

``python -m fixmatch_ray.sweep FILE --dry-run`` prints it after every check the sweep makes
(nothing started, nothing written); every real sweep prints it at its head. No Ray here: the
cluster's resources come through :mod:`.cluster`, only when one is reachable.

Step times (ms per optimisation step of one trial on one whole GPU) come from ``--step-times FILE``
(what ``bench gpu`` writes) or else :data:`DEFAULT_STEP_MS`, which are estimates, never
measurements, and are printed as such. The step-time file::

    {"card": "NVIDIA H100 80GB HBM3",        # the GPU the times were measured on (printed)
     "images_per_step": 960,                 # optional: B*(1+2*mu) the times were measured at (960)
     "step_ms": {"wideresnet-28-2": {"off": 5.8, "bf16": 4.9, "bf16+compile": 3.9},
                 "wideresnet-28-8": {"off": 52.0, "bf16": 31.0}}}

Model keys are ``arch-depth-width``, plus ``-s<scales>`` for a wideresnet that is not 3-stage and
``-c<cardinality>`` for resnext (:func:`model_key`). Precision keys are ``off``, ``bf16``,
``fp16``, optionally with ``+compile``; ``amp: auto`` looks up bf16 then fp16 (bf16 where the card
has it), fp16 falls back to bf16. A model or precision the file lacks falls back to the defaults.
"""
from __future__ import annotations

import heapq
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from ..errors import ConfigError
from .cluster import DRIVER_RESOURCE, TRIAL_DRIVER_CPU

if TYPE_CHECKING:
    from ..config import SweepSpec
    from ..config.resources import Resources
    from ..config.run import RunConfig

REFERENCE_IMAGES = 64 * (1 + 2 * 7)  # B=64, mu=7: 64 labeled + 448 weak + 448 strong per step
PRECISIONS = ("off", "bf16", "fp16")

# Default ms/step on one H100, device augmentation (aug_backend: tensor), at REFERENCE_IMAGES:
# ESTIMATES. The WRN figures are issue 15's targets, not measurements; bf16 is given no speed-up
# over fp32 (cuDNN convolutions already run in TF32) until `bench gpu` says otherwise.
DEFAULT_STEP_MS: dict[str, dict[str, float]] = {
    "wideresnet-28-2": {"off": 6.0, "bf16": 6.0},
    "wideresnet-28-8": {"off": 35.0, "bf16": 35.0},
    # STL-10's net (96 px): 6.4 GFLOP/image forward, 0.96x WRN-28-8's 6.7, but its thin
    # high-resolution layers are memory-bound: guessed 1.3x slower than WRN-28-8
    "wideresnet-46-2-s5": {"off": 45.0, "bf16": 45.0},
    # ResNeXt-29 4x4 (CIFAR-10/SVHN): 0.34 GFLOP/image, below WRN-28-2's 0.43: the same overhead-bound 6 ms
    "resnext-29-4-c4": {"off": 6.0, "bf16": 6.0},
    # ResNeXt-29 8x64 (CIFAR-100): 10.8 GFLOP/image, 1.6x WRN-28-8, in grouped convolutions that run
    # below dense ones' rate: guessed 2x WRN-28-8
    "resnext-29-64-c8": {"off": 70.0, "bf16": 70.0},
}
ESTIMATE = "estimate"
ESTIMATE_LEGEND = ("estimate: issue 15's targets for one H100 (WRN-28-2 6 ms, WRN-28-8 35 ms) or labelled guesses, "
                   "not measurements; measure with `python -m fixmatch_ray.bench gpu`, pass --step-times")


@dataclass(frozen=True)
class StepTimes:
    """A step-time table: ms per step by model key and precision key."""

    step_ms: Mapping[str, Mapping[str, float]]
    card: str = "H100"
    images_per_step: int = REFERENCE_IMAGES
    measured: bool = False

    @property
    def source(self) -> str:
        return f"measured on {self.card}" if self.measured else ESTIMATE


DEFAULTS = StepTimes(DEFAULT_STEP_MS)


def load_step_times(path: str | os.PathLike) -> StepTimes:
    """Read a ``--step-times`` file (format above); any problem is one :class:`ConfigError` line."""
    where = f"--step-times {os.fspath(path)}"
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{where}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise ConfigError(f"{where}: not JSON ({e}); expected {{\"card\": ..., \"step_ms\": {{model: {{amp: ms}}}}}}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("step_ms"), dict) or not doc["step_ms"]:
        raise ConfigError(f"{where}: expected an object with a non-empty \"step_ms\": {{model: {{amp: ms}}}}, "
                          "e.g. {\"card\": \"H100\", \"step_ms\": {\"wideresnet-28-2\": {\"off\": 6.0}}}")
    unknown = set(doc) - {"card", "images_per_step", "step_ms"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected card, images_per_step, step_ms")
    for model, times in doc["step_ms"].items():
        if not isinstance(times, dict) or not times:
            raise ConfigError(f"{where}: step_ms.{model}: expected {{amp: ms}}, e.g. {{\"off\": 6.0, \"bf16\": 4.5}}, got {times!r}")
        for amp, ms in times.items():
            if amp.removesuffix("+compile") not in PRECISIONS:
                raise ConfigError(f"{where}: step_ms.{model}.{amp}: unknown precision; expected one of "
                                  f"{', '.join(PRECISIONS)}, optionally with +compile")
            if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not ms > 0 or not math.isfinite(ms):
                raise ConfigError(f"{where}: step_ms.{model}.{amp}: expected milliseconds > 0, got {ms!r}")
    images = doc.get("images_per_step", REFERENCE_IMAGES)
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"{where}: images_per_step: expected a positive integer, got {images!r}")
    card = doc.get("card", "an unnamed card")
    return StepTimes(doc["step_ms"], str(card), images, measured=True)


def model_key(run: "RunConfig") -> str:
    """The step-time table's key of a (resolved) run's network, e.g. ``wideresnet-28-2``."""
    key = f"{run.arch}-{run.depth}-{run.width}"
    if run.arch == "wideresnet" and run.scales not in (None, 3):
        key += f"-s{run.scales}"
    if run.arch == "resnext":
        key += f"-c{run.cardinality}"
    return key


def _precisions(run: "RunConfig") -> list[str]:
    amp = {"auto": ["bf16", "fp16"], "fp16": ["fp16", "bf16"]}.get(run.amp, [run.amp])
    return [f"{a}+compile" for a in amp] * bool(run.compile) + amp


def images_per_step(run: "RunConfig") -> int:
    """Images the data path gives a step of ``run``: B per labeled view, μ·B per unlabeled view."""
    return run.batch_size * len(run.views.labeled) + run.unlabeled_batch_size * len(run.views.unlabeled)


def step_ms(run: "RunConfig", table: StepTimes) -> tuple[float, StepTimes] | None:
    """ms per step of ``run`` on one whole GPU at its own batch (images per step scaled linearly
    from the table's), with the table it came from: ``table``, else the defaults; None if neither has it."""
    images = images_per_step(run)
    for t in (table, DEFAULTS) if table is not DEFAULTS else (DEFAULTS,):
        times = t.step_ms.get(model_key(run), {})
        for amp in _precisions(run):
            if amp in times:
                return times[amp] * images / t.images_per_step, t
    return None


def trials_at_once(resources: "Resources", have: Mapping[str, float], autoscaling: bool = False) -> int:
    """How many trials fit the cluster's resources ``have`` at once; a request it cannot meet is a
    ConfigError (unless ``autoscaling``: nodes will come)."""
    r = resources
    per_worker = {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker, **r.custom_per_worker}
    # a trial's driver holds the driver resource where the cluster has it, else a sliver of CPU
    driver_cpu = 0.0 if have.get(DRIVER_RESOURCE, 0) > 0 else TRIAL_DRIVER_CPU
    fits = []
    for res, each in per_worker.items():
        amount = r.workers * each + (driver_cpu if res == "CPU" else 0.0)
        if amount <= 0:
            continue
        total = have.get(res, 0.0)
        if total < amount and not autoscaling:
            driver = f" + {driver_cpu:g} for the trial's driver" if res == "CPU" and driver_cpu else ""
            raise ConfigError(
                f"resources: a trial needs {amount:g} {res} ({r.workers} workers x {each:g}{driver}) but the "
                f"cluster has {total:g}; lower the request, or pass --autoscaling if nodes will be added"
            )
        fits.append(math.floor(total / amount + 1e-9) if total >= amount else 1)
    return max(1, min(fits))


def cluster_line(where: str, have: Mapping[str, float]) -> str:
    """``where: 16 CPU, 2 GPU``: the resources the plan's concurrency comes from."""
    return f"{where}: " + ", ".join(f"{have.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def makespan(hours: Iterable[float], slots: int) -> float:
    """Wall time of trials started in order, each as soon as one of ``slots`` is free."""
    free = [0.0] * max(1, slots)
    for h in hours:
        heapq.heapreplace(free, free[0] + h)
    return max(free)


@dataclass
class Plan:
    """What a sweep will ask for and (roughly) cost."""

    name: str
    trials: int
    settings: int
    seeds: int
    at_once: int
    cluster: str  # where at_once comes from, one line
    per_trial: str
    gpu: bool
    rows: list[tuple[str, int, float | None, str]] = field(default_factory=list)  # model, trials, h/trial, source
    gpu_hours: float | None = 0.0
    wall_hours: float | None = None
    notes: list[str] = field(default_factory=list)
    labeled_sets: int | None = None  # distinct labeled sets where split_seed fixes them apart from the seed


def make_plan(spec: "SweepSpec", have: Mapping[str, float] | None, table: StepTimes = DEFAULTS,
              autoscaling: bool = False, cluster: str = "") -> Plan:
    """The plan of ``spec`` on a cluster with resources ``have`` (None: none reachable, so the
    file's own request is assumed: ``max_concurrent_trials`` trials at once, else one)."""
    r = spec.resources
    n = len(spec.trials)
    fits = trials_at_once(r, have, autoscaling) if have is not None else (spec.max_concurrent_trials or 1)
    at_once = min(spec.max_concurrent_trials or fits, n)
    ask = [f"{r.cpus_per_worker:g} CPU"] + [f"{r.gpus_per_worker:g} GPU"] * r.use_gpu
    ask += [f"{v:g} {k}" for k, v in r.custom_per_worker.items()]
    per_trial = f"{r.workers} worker{'s' * (r.workers > 1)} x ({', '.join(ask)}), plus its driver"
    plan = Plan(spec.name, n, len({t.label for t in spec.trials}), len(spec.seeds), at_once, cluster, per_trial, r.use_gpu)
    if any(t.run.split_seed is not None for t in spec.trials):
        plan.labeled_sets = len({(t.run.dataset, t.run.num_labeled, t.run.labeled_split_seed) for t in spec.trials})
    if not r.use_gpu:
        plan.notes.append("CPU training: 0 GPU-hours; wall time not estimated (no step-time table for CPUs)")
        return plan
    _estimate(plan, spec, table)
    return plan


def _estimate(plan: Plan, spec: "SweepSpec", table: StepTimes) -> None:
    r = spec.resources
    share = r.workers * r.gpus_per_worker  # GPUs a trial holds; its speed is assumed proportional
    rows: dict[tuple[str, float, str, int], list] = {}
    hours: list[float | None] = []
    for t in spec.trials:
        found = step_ms(t.run, table)
        label = f"{model_key(t.run)} amp {t.run.amp}{' compiled' if t.run.compile else ''}"
        ms, source = (found[0], found[1].source) if found else (None, "no estimate: not in the table")
        gpu_h = None if ms is None else t.run.total_steps * ms / 3.6e6
        hours.append(None if gpu_h is None else gpu_h / share)
        rows.setdefault((label, ms or 0.0, source, t.run.total_steps), [0, gpu_h])[0] += 1
    plan.rows = [(f"{label}: {c} trials x {steps:,} steps at {f'{ms:.3g}' if ms else '?'} ms/step", c, h, src)
                 for (label, ms, src, steps), (c, h) in rows.items()]
    known = [h for h in hours if h is not None]
    plan.gpu_hours = sum(h * share for h in known) if len(known) == len(hours) else None
    plan.wall_hours = makespan(known, plan.at_once) if len(known) == len(hours) else None
    if r.workers > 1:
        plan.notes.append(f"{r.workers} DDP workers a trial: assumed {r.workers}x faster than one GPU (ideal scaling)")
    if share < 1:
        plan.notes.append(f"a trial holds {share:g} GPU: assumed to run at {share:g} of a whole GPU's speed")
    if pil := sum(t.run.aug_backend == "pil" for t in spec.trials):
        plan.notes.append(f"{pil} trials use aug_backend pil: the step times assume augmentation on the GPU "
                          "(aug_backend: tensor); issue 15 puts the PIL path at ~45-50 ms/step with 7 loader processes")


def format_plan(plan: Plan) -> list[str]:
    """The plan as console lines, each starting with ``[plan]``."""
    sets = "" if plan.labeled_sets is None else f", over {_n(plan.labeled_sets, 'labeled set')} (split_seed)"
    lines = [f"{plan.name}: {_n(plan.trials, 'trial')} = {_n(plan.settings, 'setting')} x {_n(plan.seeds, 'seed')}{sets}",
             f"per trial: {plan.per_trial}",
             f"at once: {plan.at_once} ({plan.cluster})"]
    for text, _count, hours, source in plan.rows:
        h = "GPU-hours unknown" if hours is None else f"{hours:.3g} GPU-h/trial"
        lines.append(f"  {text} = {h} [{source}]")
    if plan.gpu:
        total = "unknown (a model has no step time)" if plan.gpu_hours is None else f"{plan.gpu_hours:,.1f}"
        wall = "unknown" if plan.wall_hours is None else f"{plan.wall_hours:,.1f} h ({plan.wall_hours / 24:.1f} days)"
        lines.append(f"GPU-hours: {total}; wall time: {wall} with {plan.at_once} trial{'s' * (plan.at_once > 1)} at once")
        lines.append("(training steps only: evaluation, checkpoints, start-up and retries not counted)")
    if any(src == ESTIMATE for *_, src in plan.rows):
        lines.append(ESTIMATE_LEGEND)
    lines += plan.notes
    return [f"[plan] {line}" for line in lines]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"
