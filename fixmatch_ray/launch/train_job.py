"""``train --ddp-workers N``: one run as a Ray Train job, from the driver's side.

The workers' side (the loop, its Ray sink) is :mod:`.worker`; this joins or starts Ray, runs the
job and turns a worker's user-facing error (bad config, missing data, divergence) back into the
one line it is.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import ConfigError, Resources, RunConfig
from ..config.tracking import TrackingSpec
from ..storage import is_uri, normalize_storage, split_last
from ..storage.layout import CONFIG_FILE
from ..training.checkpoint import load_checkpoint
from ..training.record import read_record, write_record
from .cluster import ClusterError, cluster_resources, ensure_ray, free_resources, user_error
from .worker import START_TIMEOUT_ENV, START_TIMEOUT_S, START_TRIES, build_trainer


def _asked(resources: Resources) -> str:
    each = ", ".join(f"{v:g} {k}" for k, v in resources.per_worker().items())
    return f"{resources.workers} worker{'s' * (resources.workers > 1)} x ({each})"


def check_schedulable(resources: Resources, have: dict[str, float]) -> None:
    """One-line :class:`ConfigError` when the cluster's totals cannot hold the run at all (say
    ``--ddp-workers 4 --ddp-gpu`` on a machine with 2 GPUs): Ray Train would wait for it forever."""
    short = {k: v for k, v in resources.per_run().items() if have.get(k, 0.0) + 1e-9 < v}
    if short:
        has = ", ".join(f"{have.get(k, 0.0):g} {k}" for k in short)
        raise ConfigError(f"the run asks for {_asked(resources)} but the cluster has {has} in all; "
                          "ask for fewer workers (--ddp-workers) or join a cluster that has them (--address)")


def unschedulable(err: BaseException, resources: Resources) -> ClusterError | None:
    """The one line for a run whose workers were never placed: every try timed out waiting."""
    failure = getattr(err, "controller_failure", None)
    if type(failure).__name__ != "WorkerGroupStartupTimeoutError":  # ray.train.v2's (a private module)
        return None
    wait = os.environ.get(START_TIMEOUT_ENV, str(START_TIMEOUT_S))
    total, free = cluster_resources(), free_resources()
    has = ", ".join(f"{total.get(k, 0.0):g} {k} ({free.get(k, 0.0):g} free)" for k in resources.per_run())
    return ClusterError(f"the run's {_asked(resources)} could not be placed in {START_TRIES} tries of {wait} s "
                        f"each; the cluster has {has}: other jobs hold the rest, or the nodes never came")


def run_ray(cfg: RunConfig, resources: Resources, max_failures: int = 3,
            address: str | None = None, tracking: TrackingSpec | None = None) -> dict[str, Any]:
    """Run ``cfg`` as a Ray Train job stored at ``cfg.out`` (a directory or URI); its summary.

    Re-running with the same ``out`` continues from the run's latest checkpoint. A run the cluster
    cannot hold is a one-line error before anything is written; one whose workers are never placed
    gives up after :data:`.worker.START_TRIES` tries (:func:`unschedulable`).
    """
    resources.check(cfg)
    out = normalize_storage(cfg.out)
    storage, name = split_last(out)
    ensure_ray(address, min_cpus=resources.workers * resources.cpus_per_worker)
    check_schedulable(resources, cluster_resources())  # before anything is written
    if not is_uri(out):
        Path(out).mkdir(parents=True, exist_ok=True)
        cfg.save(Path(out) / CONFIG_FILE)
    trainer = build_trainer(cfg.replace(out=out), resources, storage, name, max_failures, tracking=tracking)
    try:
        result = trainer.fit()
    except Exception as err:  # Ray's TrainingFailedError: a worker's bad config, missing data, divergence
        cause = user_error(err) or unschedulable(err, resources)
        if cause is not None:
            raise cause from None
        raise
    record = read_record(out)
    if record is None:  # the record follows the checkpoint; rebuild it if the run ended in between
        with result.checkpoint.as_directory() as d:
            state, _ = load_checkpoint(d)
        record = write_record(out, cfg.to_dict(), state["history"], precision=state.get("precision"))
    return record["summary"]
