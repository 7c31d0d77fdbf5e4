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
