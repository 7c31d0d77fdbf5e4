"""Real Ray Train runs on CPU (gloo): DDP workers, reports, SIGKILL + exact resume."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from fixmatch_ray.training.checkpoint import load_checkpoint
from fixmatch_ray.config import ConfigError, RunConfig
from fixmatch_ray.launch.worker import CHECKPOINTS_KEPT, Resources, build_trainer

pytestmark = pytest.mark.ray

CFG = RunConfig(dataset="digits", num_labeled=20, batch_size=8, mu=2, total_steps=40, eval_step=10,
                depth=10, width=1, num_workers=0, seed=1)


def train_workers() -> list:
    import psutil

    procs = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::RayTrainWorker"):
            procs.append(p)
    return procs


def kill_after_first_checkpoint(run_dir: Path, victims: int, log: list) -> None:
    """SIGKILL ``victims`` training worker processes once the run has a checkpoint."""
    deadline = time.time() + 240
    while time.time() < deadline and not list(run_dir.glob("checkpoint_*/checkpoint.pt")):
        time.sleep(0.05)
    for p in train_workers()[:victims]:
        os.kill(p.pid, signal.SIGKILL)
        log.append(p.pid)


def fit_with_kill(tmp_path: Path, name: str, workers: int, kill: bool):
    log: list[int] = []
    killer = None
    if kill:
        killer = threading.Thread(target=kill_after_first_checkpoint, args=(tmp_path / name, 1, log))
        killer.start()
    result = build_trainer(CFG, Resources(workers=workers), str(tmp_path), name, max_failures=2).fit()
    if killer is not None:
        killer.join()
        assert log, "no training worker was killed"
    state, _ = load_checkpoint(Path(result.checkpoint.path) / "..")
    return result, state


def strip(history):
    return [{k: v for k, v in h.items() if k not in ("images_per_s", "wall_time")} for h in history]


def test_two_workers_report_and_survive_a_killed_worker(ray_session, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, state = fit_with_kill(tmp_path, "ddp2", workers=2, kill=True)
    assert result.error is None
    assert [h["step"] for h in state["history"]] == [10, 20, 30, 40]  # continued, no restart at 0
    assert state["step"] == 40 and result.metrics["step"] == 40
    assert result.metrics["world_size"] == 2 and result.metrics["samples_per_step"] == 8 * (1 + 2 * 2)
    for key in ("lr", "train_loss", "train_mask", "test_acc", "raw_test_acc", "median20_acc", "best_acc"):
        assert key in result.metrics
    # the same split as a single process (split depends on dataset, num_labeled, seed only)
    tb_steps = []
    for events in (tmp_path / "ddp2" / "tensorboard").glob("events.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tb_steps += [e.step for e in acc.Scalars("test_acc")]
    assert min(tb_steps) == 10 and set(tb_steps) == {10, 20, 30, 40}
    # bounded: Ray keeps CHECKPOINTS_KEPT; a worker killed while reporting may orphan one more
    assert len([d for d in (tmp_path / "ddp2").glob("checkpoint_*") if d.is_dir()]) <= CHECKPOINTS_KEPT + 1


def test_killed_single_worker_resumes_exactly(ray_session, tmp_path):
    straight, a = fit_with_kill(tmp_path, "straight", workers=1, kill=False)
    killed, b = fit_with_kill(tmp_path, "killed", workers=1, kill=True)
    assert strip(a["history"]) == strip(b["history"])
    for key in ("model", "ema", "optimizer"):
        if key == "optimizer":
            sa, sb = a[key]["state"], b[key]["state"]
            assert all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)
        else:
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    # 1 worker and 2 workers see the same number of samples per step
    assert straight.metrics["samples_per_step"] == 40 and straight.metrics["world_size"] == 1


def test_batch_must_divide_over_workers():
    with pytest.raises(ConfigError, match="batch_size = 8 is not divisible by 3 DDP workers"):
        Resources(workers=3).check(CFG)


def test_cli_ddp_workers(ray_session, tmp_path, capsys):
    import json

    from fixmatch_ray.train import main

    out = tmp_path / "cli"
    args = ["--dataset", "digits", "--num-labeled", "20", "--batch-size", "8", "--mu", "2", "--total-steps", "8",
            "--eval-step", "4", "--depth", "10", "--width", "1", "--num-workers", "0", "--seed", "3",
            "--out", str(out)]
    assert main(args + ["--ddp-workers", "3"]) == 2
    assert "not divisible by 3 DDP workers" in capsys.readouterr().err
    assert not out.exists()
    assert main(args + ["--ddp-workers", "2"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in doc["history"]] == [4, 8] and doc["history"][0]["samples_per_step"] == 40
    assert (out / "config.yaml").is_file() and list((out / "tensorboard").glob("events.*"))
    assert main(args + ["--ddp-workers", "2"]) == 2  # refuses to overwrite
    assert "already holds a run" in capsys.readouterr().err


def test_tensor_backend_under_ddp(ray_session, tmp_path):
    """aug_backend: tensor on 2 DDP workers: each rank augments its slice of the global batch."""
    cfg = CFG.replace(aug_backend="tensor", total_steps=8, eval_step=4)
    result = build_trainer(cfg, Resources(workers=2), str(tmp_path), "tensor2", max_failures=0).fit()
    assert result.metrics["step"] == 8 and result.metrics["samples_per_step"] == 40
    assert result.metrics["world_size"] == 2 and 0 <= result.metrics["test_acc"] <= 100


# -- nothing waits forever -------------------------------------------------------------------------
def test_a_run_the_cluster_cannot_hold_is_one_line_before_anything_starts(ray_session, tmp_path, capsys):
    """``--ddp-workers N --ddp-gpu`` with N above the cluster's GPUs: refused before fit() (Ray Train
    would wait for the GPUs forever), exit 2, one line naming the request and what the cluster has."""
    from fixmatch_ray.train import main

    gpus = int(ray_session.cluster_resources().get("GPU", 0))
    n = max(2, gpus + 1)
    out = tmp_path / "ddp-gpu"
    tic = time.monotonic()
    rc = main(["--dataset", "digits", "--num-labeled", "20", "--batch-size", "8", "--mu", "2", "--total-steps", "4",
               "--depth", "10", "--width", "1", "--num-workers", "0", "--seed", "1", "--out", str(out),
               "--ddp-workers", str(n), "--ddp-gpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and time.monotonic() - tic < 30
    assert err == (f"error: the run asks for {n} workers x (1 CPU, 1 GPU) but the cluster has {gpus} GPU in all; "
                   "ask for fewer workers (--ddp-workers) or join a cluster that has them (--address)")
    assert not out.exists()  # nothing half-written


def test_a_run_whose_workers_are_never_placed_gives_up_in_one_line(ray_session, tmp_path, monkeypatch):
    """The cluster has the CPUs in all but another job holds them (a placement group here): each try
    waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, and after START_TRIES tries the run stops with one
    line, instead of Ray Train's unlimited retries."""
    from ray.util.placement_group import placement_group, remove_placement_group

    from fixmatch_ray.launch import train_job, worker
    from fixmatch_ray.launch.cluster import ClusterError

    monkeypatch.setenv(worker.START_TIMEOUT_ENV, "2")
    cpus = ray_session.available_resources().get("CPU", 0)
    holder = placement_group([{"CPU": cpus}])
    ray_session.get(holder.ready(), timeout=60)
    try:
        tic = time.monotonic()
        with pytest.raises(ClusterError) as e:
            train_job.run_ray(CFG.replace(out=str(tmp_path / "never")), Resources(workers=1), max_failures=0)
        waited = time.monotonic() - tic
    finally:
        remove_placement_group(holder)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        f"the run's 1 worker x (1 CPU) could not be placed in {worker.START_TRIES} tries of 2 s each; the cluster has ")
    assert "(0 free)" in msg
    assert worker.START_TRIES * 2 <= waited < 120
