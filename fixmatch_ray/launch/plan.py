"""A sweep's plan before the spend: trials, resources, how many run at once, GPU-hours, wall time,
the precision and GPU memory of each trial.

``python -m fixmatch_ray.sweep FILE --dry-run`` prints it after every check the sweep makes
(nothing started, nothing written); every real sweep prints it at its head. No Ray here: the
cluster's resources come through :mod:`.cluster`, only when one is reachable.

Step times (ms per optimisation step of one trial) come from ``--step-times FILE`` (what ``bench
gpu`` writes, :mod:`..perf.steptimes`) or else from the stated model of :mod:`..perf.estimate`,
printed as an estimate with its basis. The card is the one measured, else the cluster's
(``accelerator_type:`` resources), else ``--card``, else an H100 (said so). Where the card's memory
is known (the step-time file's ``card_memory_gib``, a cluster's or ``--card``'s card), a trial that
would not fit on it is refused.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

from ..errors import ConfigError
from ..perf.cards import CARDS, DEFAULT_CARD, Card, accelerator_card, find_card
from ..perf.steptimes import (DEFAULTS, ESTIMATE, PRECISION_LABEL, StepTimes, load_step_times, model_key,  # noqa: F401
                              step_time)
from .cluster import trial_driver_request

if TYPE_CHECKING:
    from ..config import SweepSpec
    from ..config.resources import Resources

def trials_at_once(resources: "Resources", have: Mapping[str, float], autoscaling: bool = False) -> int:
    """How many trials fit the cluster's resources ``have`` at once; a request it cannot meet is a
    ConfigError (unless ``autoscaling``: nodes will come)."""
    r = resources
    per_worker = {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker, **r.custom_per_worker}
    driver_cpu = trial_driver_request(have).get("CPU", 0.0)
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
    rows: list[tuple[str, int, float | None, str]] = field(default_factory=list)  # text, trials, h/trial, source
    gpu_hours: float | None = 0.0
    wall_hours: float | None = None
    notes: list[str] = field(default_factory=list)
    card: Card = CARDS[DEFAULT_CARD]
    card_from: str = "assumed"  # "measured", "cluster", "--card" or "assumed"
    labeled_sets: int | None = None  # distinct labeled sets where split_seed fixes them apart from the seed


def make_plan(spec: "SweepSpec", fits: int, table: StepTimes = DEFAULTS, cluster: str = "",
              have: Mapping[str, float] | None = None, card: str | None = None) -> Plan:
    """The plan of ``spec`` where ``fits`` trials fit at once (:func:`.preflight.check_capacity`,
    from the cluster's resources ``have`` that ``cluster`` names; None: none reachable), with step
    times from ``table`` and ``card`` (a name, e.g. ``A10G``) where nothing better says which GPU."""
    r = spec.resources
    n = len(spec.trials)
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
    plan.card, plan.card_from = _card(table, have, card)
    _estimate(plan, spec, table)
    return plan


def _card(table: StepTimes, have: Mapping[str, float] | None, name: str | None) -> tuple[Card, str]:
    """The GPU the plan is for, and where that came from."""
    measured = find_card(table.card) if table.measured else None
    if measured is not None:
        return measured, "measured"
    on_cluster = accelerator_card(dict(have)) if have else None
    if on_cluster is not None:
        return on_cluster, "cluster"
    if name:
        found = find_card(name)
        if found is None:
            raise ConfigError(f"--card {name}: unknown GPU; expected one of {', '.join(CARDS)}")
        return found, "--card"
    return CARDS[DEFAULT_CARD], "assumed"


def _memory_limit(plan: Plan, table: StepTimes) -> float | None:
    """GiB of one GPU when it is known (measured, a cluster's or --card's card), else None."""
    if plan.card_from == "measured":
        return table.card_memory_gib
    return plan.card.memory_gib if plan.card_from in ("cluster", "--card") else None


def _estimate(plan: Plan, spec: "SweepSpec", table: StepTimes) -> None:
    from ..perf.estimate import basis, ddp_speedup, known, memory_gib

    r = spec.resources
    per_gpu = max(1, math.floor(1 / r.gpus_per_worker + 1e-9)) if r.gpus_per_worker < 1 else 1  # trials sharing one
    limit = _memory_limit(plan, table)
    rows: dict[tuple[str, float, str, int], list] = {}
    hours: list[float | None] = []
    for t in spec.trials:
        run = t.run
        found = step_time(run, table, r.workers, plan.card)
        key = model_key(run)
        prec = found.precision if found else "?"
        label = f"{run.dataset} {key} {PRECISION_LABEL.get(prec.removesuffix('+compile'), run.amp)}"
        label += f"{' compiled' if run.compile else ''} {run.policy}"
        gpu_h = wall_h = None
        if found is not None:
            wall_h = run.total_steps * found.ms / 3.6e6 / r.gpus_per_worker
            gpu_h = wall_h * r.workers * r.gpus_per_worker
        hours.append(wall_h)
        need = None
        if known(key, run.policy):
            need = memory_gib(key, prec, run.policy, run.batch_size * (1 + 2 * run.mu), run.dataset, r.workers) * per_gpu
            if limit is not None and need > limit:
                raise ConfigError(
                    f"{t.name}: a trial needs ~{need:.1f} GiB of GPU memory ({key}, {PRECISION_LABEL.get(prec, prec)}, "
                    f"{'%d trials a GPU, ' % per_gpu if per_gpu > 1 else ''}by the memory model) but the "
                    f"{plan.card.name} has {limit:.1f} GiB; use a bigger GPU"
                    f"{', amp: bf16' if prec.startswith(('off', 'ieee')) else ''}"
                    f"{', fewer trials a GPU' if per_gpu > 1 else ''} or more DDP workers")
        text = label + (f", ~{need:.1f} GiB a GPU" if need is not None else "")
        source = found.source if found else "no estimate: no counts for this model"
        rows.setdefault((text, found.ms if found else 0.0, source, run.total_steps), [0, gpu_h])[0] += 1
    plan.rows = [(f"{text}: {c} trials x {steps:,} steps at {f'{ms:.3g}' if ms else '?'} ms/step", c, h, src)
                 for (text, ms, src, steps), (c, h) in rows.items()]
    complete = all(h is not None for h in hours)
    plan.gpu_hours = sum(h * r.workers * r.gpus_per_worker for h in hours) if complete else None
    plan.wall_hours = makespan(hours, plan.at_once) if complete else None
    if any(src == ESTIMATE for *_, src in plan.rows):
        plan.notes.append(basis(plan.card, spec.trials[0].run.cuda_graphs)
                          + ("" if plan.card_from != "assumed" else "; the card is assumed (--card NAME for another)"))
    if r.workers > 1:
        run = spec.trials[0].run
        if known(model_key(run), run.policy):
            speed = ddp_speedup(model_key(run), "off", run.policy, run.batch_size * (1 + 2 * run.mu), r.workers,
                                plan.card, run.cuda_graphs)
            plan.notes.append(f"{r.workers} DDP workers a trial: {model_key(run)} runs {speed:.1f}x as fast as on one "
                              f"GPU by the DDP model (each rank launches every kernel), not {r.workers}x")
    if r.gpus_per_worker < 1:
        plan.notes.append(f"a trial holds {r.gpus_per_worker:g} GPU: assumed to run at {r.gpus_per_worker:g} of a "
                          "whole GPU's speed")
    if pil := sum(t.run.aug_backend == "pil" for t in spec.trials):
        plan.notes.append(f"{pil} trials use aug_backend pil: the step times assume augmentation on the GPU "
                          "(aug_backend: tensor); the PIL path caps a GPU at ~20-25 steps/s")
    plan.notes += [f"measurement note: {n}" for n in table.notes]
    _ieee_cost(plan, spec, table)


def _ieee_cost(plan: Plan, spec: "SweepSpec", table: StepTimes) -> None:
    """For trials in fp32 with TF32: what IEEE fp32 (``tf32: false``) would cost instead."""
    tf32 = [t for t in spec.trials if t.run.amp == "off" and t.run.tf32]
    if not tf32 or plan.gpu_hours is None:
        return
    r = spec.resources
    now = alt = 0.0
    for t in tf32:
        a, b = step_time(t.run, table, r.workers, plan.card), step_time(t.run.replace(tf32=False), table, r.workers,
                                                                       plan.card)
        if a is None or b is None:
            return
        now += t.run.total_steps * a.ms * r.workers / 3.6e6
        alt += t.run.total_steps * b.ms * r.workers / 3.6e6
    plan.notes.append(f"precision: amp off runs fp32 with TF32 convolutions and matmuls (tf32: true, PyTorch's default "
                      f"for convolutions); IEEE fp32 throughout (tf32: false, the official code's arithmetic) would "
                      f"take {plan.gpu_hours - now + alt:,.1f} GPU-hours instead of {plan.gpu_hours:,.1f}")


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
        lines.append(f"GPU-hours: {total}; wall time: {wall} with {plan.at_once} trial{'s' * (plan.at_once > 1)} at once"
                     f" on {plan.card.name}")
        lines.append("(training steps only: evaluation, checkpoints, start-up and retries not counted)")
    lines += plan.notes
    return [f"[plan] {line}" for line in lines]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"
