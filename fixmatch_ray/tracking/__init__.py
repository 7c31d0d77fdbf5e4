"""Experiment trackers behind one interface (:class:`.base.Tracker`).

TensorBoard is built in; MLflow and W&B come as optional extras (``pip install -e '.[mlflow]'``,
``'.[wandb]'``). Add a tracker: a module here with a :class:`Tracker` subclass, and its line in
``TRACKERS``. Sweeps log to MLflow / W&B through Ray Tune's callbacks instead (``launch/tuner.py``),
with the same names, steps and summary.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..storage import is_uri, local_path
from .base import SUMMARY_KEYS, TAGS, Tracker, metrics_of, params_of, record_scalars, summary_of

if TYPE_CHECKING:
    from ..config.tracking import TrackingSpec

__all__ = ["SUMMARY_KEYS", "TAGS", "TRACKERS", "Tracker", "check_tracking", "metrics_of", "params_of",
           "record_scalars", "summary_of", "trackers_for"]


def _tensorboard(**kwargs) -> Tracker:
    from .tensorboard import TensorBoardTracker  # imports torch's SummaryWriter only when used

    return TensorBoardTracker(**kwargs)


def _mlflow(**kwargs) -> Tracker:
    from .mlflow import MLflowTracker

    return MLflowTracker(**kwargs)


def _wandb(**kwargs) -> Tracker:
    from .wandb import WandbTracker

    return WandbTracker(**kwargs)


TRACKERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}


def check_tracking(spec: "TrackingSpec") -> None:
    """Each configured tracker's package is installed and its settings usable: one-line
    :class:`~fixmatch_ray.errors.ConfigError` otherwise (call it before Ray starts)."""
    if spec.mlflow is not None:
        from .mlflow import check

        check(spec.mlflow)
    if spec.wandb is not None:
        from .wandb import check

        check(spec.wandb)


def trackers_for(spec: "TrackingSpec", run_key: str, run_name: str, local_dir: str | None = None) -> list[Tracker]:
    """The MLflow / W&B trackers of one run (not started: the run's rank 0 starts them).

    ``run_key`` (the run's directory or URI) finds the run again when it resumes; W&B writes its
    files under ``spec.wandb.dir``, else ``local_dir`` (the run's directory when it is local)."""
    out = []
    if spec.mlflow is not None:
        m = spec.mlflow
        out.append(TRACKERS["mlflow"](tracking_uri=m.tracking_uri, experiment=m.experiment, tags=m.tags,
                                      run_key=run_key, run_name=run_name))
    if spec.wandb is not None:
        w = spec.wandb
        wdir = w.dir or (local_dir if local_dir and not is_uri(local_dir) else None)
        out.append(TRACKERS["wandb"](project=w.project, mode=w.mode, entity=w.entity, group=w.group, tags=w.tags,
                                     dir=os.path.abspath(local_path(wdir)) if wdir else None, run_key=run_key,
                                     run_name=run_name))
    return out
