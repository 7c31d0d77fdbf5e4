"""Experiment trackers behind one interface (:class:`.base.Tracker`), on one path for every run.

TensorBoard is built in and always on; the configurable trackers are ``TRACKERS``: MLflow and W&B
as optional extras (``pip install -e '.[mlflow]'``, ``'.[wandb]'``), and any other package
registers in the ``fixmatch_ray.trackers`` entry-point group. A single run, a ``train
--ddp-workers`` run and every sweep trial log through the same rank-0 sink of the run loop
(:class:`~fixmatch_ray.training.sinks.TrackerSink`), so a tracker added here appears in all of
them. Add one: a module here with a :class:`Tracker` subclass (``name``, ``Options``, ``check``),
and its line below.
"""
from __future__ import annotations

from typing import Any

from ..plugins import Registry
from .base import (BOOKKEEPING, SUMMARY_KEYS, TrackedRun, Tracker, metrics_of, params_of, record_scalars,
                   summary_of)
from .mlflow import MLflowTracker
from .wandb import WandbTracker

__all__ = ["BOOKKEEPING", "SUMMARY_KEYS", "TRACKERS", "TrackedRun", "Tracker", "check_tracking", "metrics_of",
           "params_of", "record_scalars", "summary_of", "tensorboard", "trackers_for"]


def _valid(name: str, cls: object) -> str | None:
    from ..config.strict import Options

    if not (isinstance(cls, type) and issubclass(cls, Tracker)):
        return f"expected a subclass of fixmatch_ray.tracking.base.Tracker, got {cls!r}"
    if not (isinstance(cls.Options, type) and issubclass(cls.Options, Options)):
        return "its Options must subclass fixmatch_ray.config.strict.Options"
    return None


TRACKERS: Registry[type[Tracker]] = Registry("tracker", _valid)
for _builtin in (MLflowTracker, WandbTracker):
    TRACKERS.add(_builtin.name, _builtin)


def tensorboard(logdir: str) -> Tracker:
    """The TensorBoard tracker every run has (imports torch's SummaryWriter only when used)."""
    from .tensorboard import TensorBoardTracker

    return TensorBoardTracker(logdir=logdir)


def check_tracking(spec: Any) -> None:
    """Each tracker of ``spec`` (a ``config.tracking.TrackingSpec``): its package is installed and its
    settings are usable, else one :class:`~fixmatch_ray.errors.ConfigError` line (call it before the
    run, and Ray, start)."""
    for name, options in spec.trackers.items():
        TRACKERS[name].check(options)


def trackers_for(spec: Any, run: TrackedRun) -> list[Tracker]:
    """The trackers of ``spec`` (a ``config.tracking.TrackingSpec``) for one run (not started: the
    run's rank 0 starts them)."""
    return [TRACKERS[name](options, run) for name, options in spec.trackers.items()]
