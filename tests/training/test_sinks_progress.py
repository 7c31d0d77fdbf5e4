"""train's progress bar (training.sinks.ProgressSink): its time left is the sweep's ETA code's,
with a fake clock."""
from __future__ import annotations

from types import SimpleNamespace

from fixmatch_ray.training.sinks import ProgressSink


def test_progress_bar_shows_the_eta_of_the_work_left_not_of_restored_steps():
    now = [0.0]
    sink = ProgressSink(clock=lambda: now[0])
    sink.start(SimpleNamespace(cfg=SimpleNamespace(total_steps=1000), step=400))  # restored at step 400
    assert "<estimating…" in str(sink.bar)
    for step, t in ((450, 30.0), (500, 40.0), (550, 50.0)):  # start-up, then 50 steps per 10 s
        now[0] = t
        sink.progress(step, {"loss": 0.5})
    # 450 steps left at 5 steps/s: 90 s (restored steps counted as throughput: 550 / 50 s, 41 s)
    assert "550/1000" in str(sink.bar) and "<1m30s," in str(sink.bar)
    now[0] = 60.0
    assert "<1m20s," in str(sink.bar)  # it counts down between updates
    sink.close()


def test_progress_shows_any_algorithms_metrics_under_their_record_names_beside_the_eta(capsys):
    """An algorithm that names its metrics otherwise (no loss, no mask) gets them in the bar and in
    the line per evaluation, as the record names them; the ETA stays in the bar."""
    now = [0.0]
    sink = ProgressSink(clock=lambda: now[0])
    trainer = SimpleNamespace(cfg=SimpleNamespace(total_steps=100), step=0)
    sink.start(trainer)
    for step, t in ((10, 10.0), (20, 20.0), (30, 30.0)):
        now[0] = t
        sink.progress(step, {"total": 1.25, "entropy": 0.5})
    bar = str(sink.bar)
    assert "train_total=1.250" in bar and "train_entropy=0.500" in bar and "<1m10s," in bar
    record = {"step": 30, "epoch": 1, "lr": 0.03, "train_total": 1.25, "train_entropy": 0.5, "test_acc": 50.0,
              "test_loss": 1.5, "median20_acc": 50.0, "best_acc": 50.0, "images_per_s": 120.0}
    sink.epoch(record, trainer)
    sink.close()
    line = capsys.readouterr().err.splitlines()
    assert ("epoch 1 step 30/100 | train_total 1.2500 train_entropy 0.5000 | lr 0.03000 | test_acc 50.00 "
            "test_loss 1.5000 median20_acc 50.00 best_acc 50.00 | 120 img/s") in [s.strip("\r") for s in line]
