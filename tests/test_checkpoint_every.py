"""Checkpoints every k evaluations, the run record that never runs ahead of a persisted checkpoint,
and (with Ray) asynchronous checkpoint uploads that survive a SIGKILL right after a report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fixmatch_ray.config import RunConfig
from fixmatch_ray.training.checkpoint import find_checkpoint, load_checkpoint, snapshot_to_cpu
from fixmatch_ray.training.loop import run_training
from fixmatch_ray.training.record import read_record
from fixmatch_ray.training.sinks import CheckpointSink, RecordSink, Sink

CFG = RunConfig(dataset="digits", num_labeled=20, batch_size=8, mu=2, total_steps=40, eval_step=10, depth=10,
                width=1, num_workers=0, seed=1, device="cpu", ema_decay=0.9)


class Spy(Sink):
    """After each evaluation (and the sinks before it): (its step, the record's, the checkpoint's)."""

    def __init__(self, out: Path):
        self.out, self.seen = out, []

    def epoch(self, record, trainer):
        path = find_checkpoint(self.out)
        self.seen.append((record["step"], read_record(str(self.out))["step"],
                          load_checkpoint(path)[0]["step"] if path else None))


@pytest.mark.parametrize("every, total, expected", [
    (2, 40, [(10, 0, None), (20, 20, 20), (30, 20, 20), (40, 40, 40)]),
    (3, 40, [(10, 0, None), (20, 0, None), (30, 30, 30), (40, 40, 40)]),  # the last evaluation always saves
    (1, 20, [(10, 10, 10), (20, 20, 20)]),
])
def test_checkpoint_every_k_evaluations_and_the_record_follows_it(tmp_path, every, total, expected):
    out = tmp_path / "run"
    out.mkdir()
    spy = Spy(out)
    run_training(CFG.replace(checkpoint_every=every, total_steps=total), torch.device("cpu"),
                 [CheckpointSink(out), RecordSink(str(out)), spy])
    assert spy.seen == expected


class StopAfter(Sink):
    def __init__(self, step: int):
        self.step = step

    def epoch(self, record, trainer):
        if record["step"] == self.step:
            raise KeyboardInterrupt


def test_checkpoint_every_must_be_positive_and_may_change_on_resume(tmp_path):
    """Interrupted after evaluation 3 with checkpoint_every 2 (last checkpoint: step 20), resumed
    with --checkpoint-every 1: it continues from 20, saves at 30 and 40, and says so."""
    from fixmatch_ray.config import ConfigError
    from fixmatch_ray.train import main

    with pytest.raises(ConfigError, match="checkpoint_every: must be a positive integer, got 0"):
        CFG.replace(checkpoint_every=0)
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        run_training(CFG.replace(checkpoint_every=2, out=str(out)), torch.device("cpu"),
                     [CheckpointSink(out), RecordSink(str(out)), StopAfter(30)])
    assert load_checkpoint(out)[0]["step"] == 20 and read_record(str(out))["step"] == 20
    assert main(["--resume", str(out), "--checkpoint-every", "1", "--no-progress"]) == 0
    record = read_record(str(out))
    assert [h["step"] for h in record["history"]] == [10, 20, 30, 40] and record["config"]["checkpoint_every"] == 1
    assert load_checkpoint(out / "checkpoint.prev.pt")[0]["step"] == 30  # saved at 30 under the new setting


def test_snapshot_is_a_host_copy_that_training_cannot_change():
    live = {"model": {"w": torch.ones(3)}, "opt": [torch.zeros(2)], "step": 4}
    snap = snapshot_to_cpu(live)
    live["model"]["w"].add_(1)
    live["opt"][0].add_(1)
    assert snap["model"]["w"].tolist() == [1, 1, 1] and snap["opt"][0].tolist() == [0, 0] and snap["step"] == 4


def strip(history):
    return [{k: v for k, v in h.items() if k not in ("images_per_s", "wall_time")} for h in history]


@pytest.mark.ray
def test_sigkill_right_after_an_async_report_leaves_a_consistent_resumable_run(ray_session, tmp_path):
    """Rank 0 SIGKILLs its process the instant the report of evaluation 2 returns (the checkpoint
    of step 20 is then still being written and uploaded by Ray's upload thread). At that instant
    the record holds no evaluation that a complete checkpoint in storage lacks; Ray restarts the
    worker from its last registered checkpoint, and the run ends with steps 10..40 once each, the
    record equal to the final checkpoint's history."""
    from fixmatch_ray.config import Resources
    from fixmatch_ray.launch.worker import run_loop_config, torch_trainer, train_loop_per_worker

    marker = tmp_path / "killed.json"
    hooks = {"upload": "async", "fault": {"kill_after_epoch": 2, "marker": str(marker)}}
    config = {**run_loop_config(CFG, str(tmp_path / "crashed")), **hooks}
    result = torch_trainer(train_loop_per_worker, config, Resources(), str(tmp_path), "crashed", max_failures=2).fit()
    seen = json.loads(marker.read_text())  # written by the worker just before its SIGKILL
    assert seen["record_step"] in [0, *seen["checkpoints"]] and seen["record_step"] <= 20, seen
    assert result.error is None and result.metrics["step"] == 40
    final = load_checkpoint(Path(result.checkpoint.path))[0]
    record = read_record(str(tmp_path / "crashed"))
    assert record["finished"] and strip(record["history"]) == strip(final["history"])
    assert [h["step"] for h in final["history"]] == [10, 20, 30, 40]


def test_async_uploads_run_one_at_a_time(tmp_path, monkeypatch):
    """A store slower than the evaluations holds training back at the next checkpoint (the report
    waits for the upload before it) instead of queueing state snapshots in host memory. Ray's
    report and storage are stood in for: the upload functions run when the test says."""
    import threading
    from types import SimpleNamespace

    import ray.train

    from fixmatch_ray.launch import worker

    pending = []

    def report(metrics, checkpoint=None, checkpoint_upload_fn=None, **kwargs):
        if checkpoint_upload_fn is not None:
            pending.append((checkpoint, checkpoint_upload_fn))

    monkeypatch.setattr(ray.train, "report", report)
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace())  # no storage: worker.persister's own copy
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer = SimpleNamespace(cfg=CFG.replace(checkpoint_every=1), history=[], step=0, precision="fp32 (CPU)",
                              state_dict=lambda: {"step": trainer.step, "model": {"w": torch.arange(3.0)}})
    sink = worker.RaySink(0, str(run_dir), upload="async")

    def evaluate(step: int) -> None:
        trainer.step = step
        trainer.history.append({"step": step, "epoch": len(trainer.history) + 1, "test_acc": 50.0})
        sink.epoch(trainer.history[-1], trainer)

    evaluate(10)
    assert len(pending) == 1 and read_record(str(run_dir)) is None  # uploading: no record yet
    second = threading.Thread(target=evaluate, args=(20,))
    second.start()
    second.join(1.0)
    assert second.is_alive() and len(pending) == 1  # waits: one snapshot in flight at most
    checkpoint, upload = pending[0]
    upload(checkpoint, "checkpoint_000000")
    second.join(10)
    assert not second.is_alive() and len(pending) == 2
    assert read_record(str(run_dir))["step"] == 10  # written by the first upload, after its checkpoint
    assert load_checkpoint(find_checkpoint(checkpoint.path))[0]["step"] == 10
    assert load_checkpoint(run_dir / "checkpoint_000000")[0]["step"] == 10  # persisted where Ray keeps them
