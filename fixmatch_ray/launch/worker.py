"""One run as a Ray Train job: ``train_loop_per_worker`` on G DDP workers.

The loop is :func:`~fixmatch_ray.training.loop.run_training`, the same as a local run's, with a
Ray sink: each rank takes 1/G of every step's global batch, reports once per eval epoch
(``ray.train.report`` is a barrier, so every rank calls it) and rank 0 attaches the checkpoint,
then writes the run record and TensorBoard. A restarted worker group resumes from
``ray.train.get_checkpoint()``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Any

import torch

from ..config import Resources, RunConfig
from ..storage import join, split_last
from ..config.strict import from_mapping
from ..config.tracking import TrackingSpec
from ..tracking import TRACKERS, trackers_for
from ..training.checkpoint import load_checkpoint, save_checkpoint
from ..training.engine import Trainer, summarize
from ..training.loop import Ranks, run_training
from ..training.record import read_record, write_record
from ..training.sinks import RecordSink, Sink, TrackerSink
from .cluster import ensure_ray, normalize_storage, user_error

TB_DIR = "tensorboard"
CHECKPOINTS_KEPT = 3  # a corrupt latest one still leaves older ones to resume from


def _quiet_train_logs() -> None:
    """Ray Train logs two INFO lines per report from every rank (the metrics dict, the checkpoint
    path); the sweep's progress table says it better. Private module paths: best effort."""
    names = ["ray.train.v2._internal.execution.storage"]
    try:
        import ray.train.v2._internal.execution.context as train_context  # logs under its file path

        names.append(train_context.__file__)
    except ImportError:
        pass
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)


class RaySink(Sink):
    """Every rank reports each evaluation to Ray Train; rank 0 attaches the checkpoint."""

    def __init__(self, rank: int):
        self.rank = rank

    def start(self, trainer: Trainer) -> None:
        if trainer.step >= trainer.cfg.total_steps and trainer.history:
            # Restored at its very end (the driver died between the last checkpoint and Tune seeing
            # the report): report the final result again, or Tune's last row would stay one behind.
            self.epoch(trainer.history[-1], trainer)

    def epoch(self, record: dict[str, Any], trainer: Trainer) -> None:
        import ray.train

        metrics = {**record, **summarize(trainer.history)}
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:
                save_checkpoint(tmp, trainer.state_dict())
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config = {"run": RunConfig dict, "run_dir": the Train run's dir or URI}``."""
    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

    from ..algorithms import LOCAL, TorchCollective

    _quiet_train_logs()
    cfg = RunConfig.from_dict(config["run"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)

    def wrap(net: torch.nn.Module) -> torch.nn.Module:
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids) if world > 1 else net

    state = None
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            state, _ = load_checkpoint(d)
    run_dir = config["run_dir"]
    trackers = []  # MLflow / W&B: built here, started by rank 0's sink (construction starts nothing)
    if config.get("tracking"):  # train --ddp-workers --tracking ...: MLflow / W&B from rank 0
        os.environ.update(config.get("tracking_env") or {})  # the driver's MLFLOW_* / WANDB_* settings
        spec = from_mapping(TrackingSpec, config["tracking"], "tracking")
        trackers += trackers_for(spec, run_dir, split_last(run_dir)[1], local_dir=run_dir)
    sinks = [RaySink(rank), RecordSink(run_dir, config.get("trial")),
             TrackerSink(lambda: TRACKERS["tensorboard"](logdir=join(run_dir, TB_DIR))),
             *(TrackerSink(lambda t=t: t) for t in trackers)]
    ranks = Ranks(rank, world, TorchCollective() if world > 1 else LOCAL)
    run_training(cfg, device, sinks, ranks, state=state, wrap=wrap)


def tracking_env() -> dict[str, str]:
    """The driver's MLflow / W&B variables (server, credentials, MLFLOW_ALLOW_FILE_STORE...): rank 0
    of a Train run is another process, maybe on another node, and its trackers need them too."""
    return {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "WANDB_"))}


def build_trainer(
    cfg: RunConfig,
    resources: Resources,
    storage_path: str,
    name: str,
    max_failures: int = 3,
    callbacks: list | None = None,
    trial: dict[str, Any] | None = None,
    tracking: TrackingSpec | None = None,
    log_level: str = "INFO",
):
    """A ``TorchTrainer`` for one run, stored under ``storage_path/name``.

    The name must be deterministic (e.g. from the Tune trial id): a Train run started again under
    the same name and storage resumes from its latest checkpoint instead of step 0. ``log_level``
    is Ray Train's console level (its controller and workers); its session log files keep all.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    resources.check(cfg)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict(), "run_dir": join(storage_path, name), "trial": trial,
                           "tracking": dataclasses.asdict(tracking) if tracking is not None else None,
                           "tracking_env": tracking_env() if tracking is not None else None},
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers, use_gpu=resources.use_gpu,
            resources_per_worker=resources.per_worker(),
        ),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            callbacks=callbacks, logging_config=ray.train.LoggingConfig(log_level=log_level),
        ),
    )


def run_ray(cfg: RunConfig, resources: Resources, max_failures: int = 3,
            address: str | None = None, tracking: TrackingSpec | None = None) -> dict[str, Any]:
    """Run ``cfg`` as a Ray Train job stored at ``cfg.out`` (a directory or URI); its summary.

    Re-running with the same ``out`` continues from the run's latest checkpoint.
    """
    import ray.train

    resources.check(cfg)
    out = normalize_storage(cfg.out)
    storage, name = split_last(out)
    ensure_ray(address, min_cpus=resources.workers * resources.cpus_per_worker)
    trainer = build_trainer(cfg.replace(out=out), resources, storage, name, max_failures, tracking=tracking)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
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
