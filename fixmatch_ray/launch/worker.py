"""One FixMatch run as a Ray Train job: ``train_loop_per_worker`` on G DDP workers.

The only module (with ``sweep.py``) that imports Ray. The loop is the plain engine: each rank
takes 1/G of every step's global batch (``data.StepBatchSampler``), reports once per eval epoch
(``ray.train.report`` is a barrier, so every rank calls it), rank 0 attaches the checkpoint and
writes TensorBoard. A restarted worker group resumes from ``ray.train.get_checkpoint()``.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, RunConfig
from ..tracking.tensorboard import Tracker, record_scalars
from ..training.checkpoint import load_checkpoint, save_checkpoint
from ..training.engine import Trainer, fit, summarize
from ..training.loop import load_run_data, step_batches
from .cluster import ensure_ray, join_storage, normalize_storage, user_error

TB_DIR = "tensorboard"
CHECKPOINTS_KEPT = 3  # a corrupt latest one still leaves older ones to resume from


@dataclass(frozen=True)
class Resources:
    """What one run asks of the cluster: G workers, each with these CPUs/GPUs."""

    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # < 1: several small runs share one GPU
    custom: tuple[tuple[str, float], ...] = ()  # extra Ray resources per worker

    def check(self, cfg: RunConfig) -> None:
        """Batch sizes must split evenly over the workers."""
        if self.workers < 1:
            raise ConfigError(f"workers: must be >= 1, got {self.workers}")
        for name, b in (("batch_size", cfg.batch_size), ("mu * batch_size", cfg.unlabeled_batch_size)):
            if b % self.workers:
                raise ConfigError(
                    f"{name} = {b} is not divisible by {self.workers} DDP workers "
                    "(batch sizes are global: each worker takes 1/G of every step)"
                )

    def per_worker(self) -> dict[str, float]:
        res = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            res["GPU"] = self.gpus_per_worker
        res.update(dict(self.custom))
        return res


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config = {"run": RunConfig dict, "tensorboard": dir or URI}``."""
    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

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

    trainer = Trainer(cfg, device, wrap)
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            state, _ = load_checkpoint(d)
        trainer.load_state_dict(state)
    data = load_run_data(cfg)
    tracker = Tracker(config.get("tensorboard"), rank)

    def on_epoch(rec: dict[str, Any]) -> None:
        metrics = {**rec, **summarize(trainer.history), "world_size": world}
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_checkpoint(tmp, trainer.state_dict())
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
                tracker.scalars(record_scalars(rec), rec["step"])
            ray.train.report(metrics, checkpoint=checkpoint)

    if trainer.step >= cfg.total_steps and trainer.history:
        # Restored at its very end (the driver died between the last checkpoint and Tune seeing
        # the report): report the final result again, or Tune's last row would stay one behind.
        on_epoch(trainer.history[-1])
    try:
        batches = step_batches(cfg, data, trainer.step, rank, world, device)
        fit(trainer, batches, (data.x_test, data.y_test), on_epoch,
            check_every=min(50, cfg.eval_step), all_reduce=_all_reduce if world > 1 else None)
    finally:
        tracker.close()


def build_trainer(
    cfg: RunConfig,
    resources: Resources,
    storage_path: str,
    name: str,
    max_failures: int = 3,
    callbacks: list | None = None,
):
    """A ``TorchTrainer`` for one run, stored under ``storage_path/name``.

    The name must be deterministic (e.g. from the Tune trial id): a Train run started again under
    the same name and storage resumes from its latest checkpoint instead of step 0.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    resources.check(cfg)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict(), "tensorboard": join_storage(storage_path, name, TB_DIR)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers, use_gpu=resources.use_gpu,
            resources_per_worker=resources.per_worker(),
        ),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            callbacks=callbacks,
        ),
    )


def run_ray(cfg: RunConfig, resources: Resources, max_failures: int = 3,
            address: str | None = None) -> dict[str, Any]:
    """Run ``cfg`` as a Ray Train job stored at ``cfg.out`` (a directory or URI); its summary.

    Re-running with the same ``out`` continues from the run's latest checkpoint.
    """
    import ray.train

    from ..training.loop import write_metrics

    resources.check(cfg)
    out = normalize_storage(cfg.out)
    storage, name = out.rstrip("/").rsplit("/", 1)
    ensure_ray(address, min_cpus=resources.workers * resources.cpus_per_worker)
    trainer = build_trainer(cfg.replace(out=out), resources, storage, name, max_failures)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        cause = user_error(err)
        if cause is not None:
            raise cause from None
        raise
    with result.checkpoint.as_directory() as d:
        state, _ = load_checkpoint(d)
    history = state["history"]
    if "://" not in out:
        write_metrics(Path(out), cfg, history)
    return summarize(history)
