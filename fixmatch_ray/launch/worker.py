"""One run as a Ray Train job: ``train_loop_per_worker`` on G DDP workers.

The loop is :func:`~fixmatch_ray.training.loop.run_training`, the same as a local run's, with a
Ray sink: each rank takes 1/G of every step's global batch, reports once per eval epoch
(``ray.train.report`` is a barrier, so every rank calls it) and rank 0 attaches a checkpoint every
``checkpoint_every`` evaluations (and at the last), then writes TensorBoard. The checkpoint is
serialised and uploaded by Ray's upload thread (``CheckpointUploadMode.ASYNC``, one upload at a
time, in report order) while training goes on; the run record is written by that upload, after
the checkpoint is in storage (the guarantee is in :mod:`..training.record`). A restarted worker
group resumes from ``ray.train.get_checkpoint()``. This module runs on the workers (and builds the
``TorchTrainer``); the driver's side of ``train --ddp-workers`` is :mod:`.train_job`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import Resources, RunConfig
from ..storage import Store, is_uri, join, local_path, split_last
from ..storage.layout import TB_DIR
from ..config.strict import from_mapping
from ..config.tracking import TrackingSpec
from ..tracking import TrackedRun, tensorboard, trackers_for
from ..training.checkpoint import candidates, load_checkpoint, load_state, save_checkpoint, snapshot_to_cpu
from ..training.engine import Engine, run_finished, summarize
from ..training.loop import Ranks, run_training
from ..training.record import read_record, record_doc, save_record, write_record
from ..training.sinks import Sink, TrackerSink, checkpoint_due
from .quiet import quiet_train_logs

CHECKPOINTS_KEPT = 3  # a corrupt latest one still leaves older ones to resume from

# Nothing waits forever. Ray Train's controller waits 60 s for a run's workers to be placed, then
# retries without limit (FailureConfig.controller_failure_limit = -1): a run that asks for more
# than the cluster has would hang. Here each try waits START_TIMEOUT_S (long enough for an
# autoscaler to add a GPU node) and a run gives up after START_TRIES tries; a user's own
# RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S wins (Ray passes it on from the process that calls fit()).
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
START_TIMEOUT_S = 300
START_TRIES = 3


UPLOAD_MODES = ("async", "sync")


class RaySink(Sink):
    """Every rank reports each evaluation to Ray Train; every ``checkpoint_every`` evaluations (and
    the last) rank 0 attaches a checkpoint. ``upload="async"`` (the default): the training thread
    only copies the state to host memory, and the report returns while Ray's upload thread
    serialises and uploads it; ``"sync"``: all of it within the report. Either way the upload
    function writes the run record once the checkpoint is in storage. Rank 0 also rewrites the
    record from the (restored) history at start, so rows after a restored step are dropped."""

    def __init__(self, rank: int, run_dir: str, trial: dict[str, Any] | None = None, upload: str = "async"):
        if upload not in UPLOAD_MODES:
            raise ValueError(f"checkpoint upload {upload!r}: expected one of {', '.join(UPLOAD_MODES)}")
        self.rank, self.run_dir, self.trial, self.upload = rank, run_dir, trial, upload
        # At most one upload in flight: a store slower than the evaluations holds training back at
        # the next checkpoint instead of piling state snapshots up in host memory.
        self.uploaded = threading.Event()
        self.uploaded.set()

    def start(self, trainer: Engine) -> None:
        if self.rank == 0:
            write_record(self.run_dir, trainer.cfg.to_dict(), trainer.history, self.trial, trainer.precision)
        if run_finished(trainer.step, trainer.cfg.total_steps) and trainer.history:
            # Restored at its very end (the driver died between the last checkpoint and Tune seeing
            # the report): report the final result again, or Tune's last row would stay one behind.
            self.epoch(trainer.history[-1], trainer)

    def epoch(self, record: dict[str, Any], trainer: Engine) -> None:
        import ray.train

        metrics = {**record, **summarize(trainer.history)}
        if not checkpoint_due(trainer):
            ray.train.report(metrics)
            return
        checkpoint = upload_fn = None
        if self.rank == 0:
            self.uploaded.wait()
            doc = record_doc(trainer.cfg.to_dict(), list(trainer.history), self.trial, trainer.precision)
            state = trainer.state_dict()  # sync: serialised before training goes on; async: copied
            checkpoint = ray.train.Checkpoint.from_directory(tempfile.mkdtemp(prefix="fixmatch-checkpoint-"))
            upload_fn = self._upload(snapshot_to_cpu(state) if self.upload == "async" else state, doc)
        mode = ray.train.CheckpointUploadMode.ASYNC if self.upload == "async" else ray.train.CheckpointUploadMode.SYNC
        if self.rank == 0:
            self.uploaded.clear()
        try:
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_upload_mode=mode,
                             delete_local_checkpoint_after_upload=True, checkpoint_upload_fn=upload_fn)
        except BaseException:
            self.uploaded.set()  # nothing will upload it
            raise

    def _upload(self, state: dict[str, Any], doc: dict[str, Any]) -> Callable:
        persist, run_dir, done = persister(self.run_dir), self.run_dir, self.uploaded

        def upload(checkpoint, dir_name: str):
            """In Ray's upload thread (or within a sync report): write, upload, then the record."""
            try:
                save_checkpoint(checkpoint.path, state)
                persisted = persist(checkpoint, dir_name)
                save_record(run_dir, doc)
                return persisted
            finally:
                done.set()

        return upload


def persister(run_dir: str) -> Callable[[Any, str], Any]:
    """How an upload function persists a checkpoint folder as ``<run_dir>/<dir_name>``, called in
    the training thread: Ray Train's own copy, ``get_context().get_storage().persist_current_checkpoint``
    (a DeveloperAPI, "may change without notice between minor versions"; ``tests/launch/test_ray_internals.py``
    pins it), else the same copy through :class:`~fixmatch_ray.storage.Store`."""
    import ray.train

    storage = getattr(ray.train.get_context(), "get_storage", lambda: None)()
    persist = getattr(storage, "persist_current_checkpoint", None)
    if persist is not None:
        return persist

    def copy(checkpoint, dir_name: str):
        store = Store(run_dir)
        store.upload_dir(checkpoint.path, dir_name)
        return ray.train.Checkpoint(posixpath.join(store.path, dir_name), filesystem=store.fs)

    return copy


class KillAfterReport(Sink):
    """Fault injection for tests (``fault={"kill_after_epoch": E, "marker": path}`` in the loop's
    config, :func:`run_loop_config`): rank 0 SIGKILLs its own process the instant the report of evaluation E
    returns, once (the marker file says it happened). Just before, it writes what storage held:
    the record's step and the steps of the complete checkpoints."""

    chief_only = True

    def __init__(self, epoch: int, marker: str, run_dir: str):
        self.kill_epoch, self.marker, self.run_dir = epoch, Path(marker), run_dir

    def epoch(self, record: dict[str, Any], trainer: Engine) -> None:
        if record["epoch"] != self.kill_epoch or self.marker.exists():
            return
        rec = read_record(self.run_dir)
        complete = []
        for path in candidates(self.run_dir):
            try:
                complete.append(load_state(path)["step"])
            except Exception:  # being written or uploaded: not a checkpoint yet
                pass
        self.marker.write_text(json.dumps({"record_step": rec["step"] if rec else None, "checkpoints": complete}))
        os.kill(os.getpid(), signal.SIGKILL)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config = {"run": RunConfig dict, "run_dir": the Train run's dir or URI}``."""
    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

    from ..algorithms import LOCAL, TorchCollective

    quiet_train_logs()
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
    run_dir, trial = config["run_dir"], config.get("trial")
    trackers = []  # the tracking block's: built here, started by rank 0's sink (construction starts nothing)
    if config.get("tracking"):
        os.environ.update(config.get("tracking_env") or {})  # the driver's MLFLOW_* / WANDB_* settings
        trackers = trackers_for(TrackingSpec.parse(config["tracking"]), TrackedRun(**config["tracked"]))
    params = {"setting": trial["label"]} if trial else {}  # a sweep trial's setting, beside its config
    sinks = [RaySink(rank, run_dir, trial, config.get("upload") or "async"),
             TrackerSink(lambda: tensorboard(join(run_dir, TB_DIR))),
             *(TrackerSink(lambda t=t: t, params) for t in trackers)]
    if config.get("fault"):
        sinks.append(KillAfterReport(config["fault"]["kill_after_epoch"], config["fault"]["marker"], run_dir))
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
    tracked: TrackedRun | None = None,
    env: dict[str, str] | None = None,
    log_level: str = "INFO",
):
    """A ``TorchTrainer`` for one run, stored under ``storage_path/name``.

    The name must be deterministic (e.g. from the Tune trial id): a Train run started again under
    the same name and storage resumes from its latest checkpoint instead of step 0. ``tracking``:
    the trackers rank 0 logs to, for the run ``tracked`` (default: the run directory, named after
    its last part), with the tracker settings ``env`` (default this process's
    :func:`tracking_env`). ``log_level`` is Ray Train's console level (its controller and
    workers); its session log files keep all.
    """
    resources.check(cfg)
    config = run_loop_config(cfg, join(storage_path, name), trial, tracking, tracked, env)
    return torch_trainer(train_loop_per_worker, config, resources, storage_path, name, max_failures, callbacks,
                         log_level)


def run_loop_config(cfg: RunConfig, run_dir: str, trial: dict[str, Any] | None = None,
                    tracking: TrackingSpec | None = None, tracked: TrackedRun | None = None,
                    env: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`train_loop_per_worker`'s config for one run (:func:`build_trainer`'s arguments). Tests
    and benchmarks add their hooks: ``upload`` (``async`` or ``sync``, :class:`RaySink`), ``fault``
    (:class:`KillAfterReport`)."""
    tracked = tracked or TrackedRun(run_dir, split_last(run_dir)[1],
                                    local_dir=None if is_uri(run_dir) else local_path(run_dir))
    tracking = tracking if tracking is not None and tracking.enabled else None
    return {"run": cfg.to_dict(), "run_dir": run_dir, "trial": trial,
            "tracking": tracking.to_dict() if tracking else None, "tracked": dataclasses.asdict(tracked),
            "tracking_env": (tracking_env() if env is None else env) if tracking else None}


def torch_trainer(loop: Callable[[dict[str, Any]], None], config: dict[str, Any], resources: Resources,
                  storage_path: str, name: str, max_failures: int = 3, callbacks: list | None = None,
                  log_level: str = "INFO"):
    """The ``TorchTrainer`` of :func:`build_trainer` over any loop function (``bench``'s own, or
    :func:`train_loop_per_worker` with a test's hooks in ``config``)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    os.environ.setdefault(START_TIMEOUT_ENV, str(START_TIMEOUT_S))
    return TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers, use_gpu=resources.use_gpu,
            resources_per_worker=resources.per_worker(),
        ),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=max_failures,
                                                   controller_failure_limit=START_TRIES - 1),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            callbacks=callbacks, logging_config=ray.train.LoggingConfig(log_level=log_level),
        ),
    )
