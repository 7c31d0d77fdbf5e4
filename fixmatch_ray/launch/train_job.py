"""``train --ddp-workers N``: one run as a Ray Train job, from the driver's side.

The workers' side (the loop, its Ray sink) is :mod:`.worker`; this joins or starts Ray, runs the
job and turns a worker's user-facing error (bad config, missing data, divergence) back into the
one line it is.
"""
from __future__ import annotations

from typing import Any

from ..config import Resources, RunConfig
from ..config.tracking import TrackingSpec
from ..storage import normalize_storage, split_last
from ..training.checkpoint import load_checkpoint
from ..training.record import read_record, write_record
from .cluster import ensure_ray, user_error
from .worker import build_trainer


def run_ray(cfg: RunConfig, resources: Resources, max_failures: int = 3,
            address: str | None = None, tracking: TrackingSpec | None = None) -> dict[str, Any]:
    """Run ``cfg`` as a Ray Train job stored at ``cfg.out`` (a directory or URI); its summary.

    Re-running with the same ``out`` continues from the run's latest checkpoint.
    """
    resources.check(cfg)
    out = normalize_storage(cfg.out)
    storage, name = split_last(out)
    ensure_ray(address, min_cpus=resources.workers * resources.cpus_per_worker)
    trainer = build_trainer(cfg.replace(out=out), resources, storage, name, max_failures, tracking=tracking)
    try:
        result = trainer.fit()
    except Exception as err:  # Ray's TrainingFailedError: a worker's bad config, missing data, divergence
        cause = user_error(err)
        if cause is not None:
            raise cause from None
        raise
    record = read_record(out)
    if record is None:  # the record follows the checkpoint; rebuild it if the run ended in between
        with result.checkpoint.as_directory() as d:
            state, _ = load_checkpoint(d)
        record = write_record(out, cfg.to_dict(), state["history"])
    return record["summary"]
