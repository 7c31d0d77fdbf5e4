"""Durable results with real processes: a trial process killed, the driver interrupted, a rerun.

The interrupted-and-resumed sweep must end with every trial's recorded history and the final
table exactly equal to an uninterrupted sweep's (runs are deterministic given the seed), and the
interrupted driver must exit 130.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from fixmatch_ray.results.aggregate import aggregate
from fixmatch_ray.results.read import read_trials
from test_faults import finish, output, start_sweep, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TOTAL = 160


def sweep_file(tmp_path: Path) -> Path:
    doc = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    doc["name"] = "durable"
    doc["base"].update(total_steps=TOTAL, eval_step=8)
    doc["resources"] = {"workers": 1, "cpus_per_worker": 1}
    doc["max_concurrent_trials"] = 2
    path = tmp_path / "durable.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def histories(exp: Path) -> dict[str, list[dict]]:
    """Every trial's recorded history, without what depends on the clock."""
    drop = ("images_per_s", "wall_time")
    return {t.name: [{k: v for k, v in h.items() if k not in drop} for h in t.history] for t in read_trials(exp)}


def progress(exp: Path) -> dict[str, int]:
    return {t.name: t.final.get("step", 0) for t in read_trials(exp)} if exp.exists() else {}


def trial_processes() -> list:
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "ImplicitFunc"), ("state", "=", "ALIVE")])


def log(proc) -> str:
    proc.log.flush()
    return Path(proc.log.name).read_text()


def test_one_driver_per_experiment_and_nothing_lost_to_faults(ray_cluster, tmp_path):
    """(1) An uninterrupted sweep, during which a second driver on the same experiment is refused
    with one line and touches nothing. (2) The same sweep elsewhere: a trial's process SIGKILLed
    (Tune retries it), the driver SIGINTed (exit 130), rerun, that driver SIGKILLed, a new driver
    takes its lease over and finishes. Every trial's history and the table equal (1)'s exactly."""
    path = sweep_file(tmp_path)
    reference = tmp_path / "reference"
    first = start_sweep(path, reference)
    try:
        wait_for(lambda: any(0 < s < TOTAL for s in progress(reference / "durable").values()), first,
                 "the first driver's trials to run")
        second = start_sweep(path, reference)
        second.wait(timeout=120)
        errors = [line for line in log(second).splitlines() if line.startswith("error: ")]
        assert second.returncode == 2 and len(errors) == 1, log(second)[-3000:]
        assert "in use by another driver" in errors[0] and f"pid {first.pid}" in errors[0], errors[0]
        assert "Traceback" not in log(second)
        finish(first)
    finally:
        if first.poll() is None:
            first.kill()
    expected = histories(reference / "durable")
    assert sorted(len(h) for h in expected.values()) == [TOTAL // 8] * 2  # complete despite the second driver

    store = tmp_path / "faulty"
    exp = store / "durable"
    proc = start_sweep(path, store)
    try:
        wait_for(lambda: any(2 <= s // 8 < TOTAL // 8 - 4 for s in progress(exp).values()), proc, "a trial mid-run")
        (victim,) = trial_processes()[:1]
        os.kill(victim.pid, signal.SIGKILL)  # the trial's own process (ray::ImplicitFunc) dies
        killed_at = dict(progress(exp))
        # the retry resumes from the checkpoint and goes on; interrupt while trials still run
        wait_for(lambda: sum(progress(exp).values()) > sum(killed_at.values()) + 16 and any(
            s < TOTAL for s in progress(exp).values()), proc, "progress after the retry")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
        out = output(proc)
        assert proc.returncode == 130, out
        assert "interrupted: run the same command again to resume" in out and "Tuner.restore" not in out, out
        before = progress(exp)
        assert any(s < TOTAL for s in before.values()), "the interrupt landed too late to test anything"
        rerun = start_sweep(path, store)
        wait_for(lambda: sum(progress(exp).values()) > sum(before.values()), rerun, "the rerun to progress")
        rerun.send_signal(signal.SIGKILL)  # a driver that dies without a word: its lease stays behind
        rerun.wait(timeout=60)
        last = start_sweep(path, store)
        finish(last)
        assert "taking over the lease" in log(last) and f"no process {rerun.pid}" in log(last), log(last)[:3000]
    finally:
        for p in (proc, locals().get("rerun"), locals().get("last")):
            if p is not None and p.poll() is None:
                p.kill()
    assert histories(exp) == expected  # same steps, same accuracies and losses, no row lost or repeated
    assert aggregate(read_trials(exp)) == aggregate(read_trials(reference / "durable"))
    assert all(t.status == "finished" for t in read_trials(exp))
