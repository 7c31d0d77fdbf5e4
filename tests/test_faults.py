"""Faults with real processes on a local multi-node cluster (fake-GPU custom resource). A killed
sweep driver, Ctrl-C and a second driver are in test_durability.py.

Each test asserts from the result files that every setting has its full n and that no trial
went back to step 0 (its eval steps strictly increase and end at total_steps).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fixmatch_ray.results.read import read_trials

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
FAKE_GPU = "fake_gpu"


def sweep_file(tmp_path: Path, seeds: list[int], total: int = 160) -> Path:
    doc = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    doc["name"] = "faults"
    doc["base"].update(total_steps=total, eval_step=8)
    doc["seeds"] = seeds
    doc["resources"] = {"workers": 1, "cpus_per_worker": 1, "custom_per_worker": {FAKE_GPU: 1}}
    doc["max_concurrent_trials"] = len(seeds)
    p = tmp_path / "faults.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def start_sweep(path: Path, store: Path, verbose: bool = False) -> subprocess.Popen:
    """The real sweep CLI joined to the test cluster; its output goes to a file (a pipe nobody
    drains while the test polls would fill up and block the sweep)."""
    import ray

    cmd = [sys.executable, "-m", "fixmatch_ray.sweep", str(path), "--storage", str(store), "--no-report",
           "--address", ray.get_runtime_context().gcs_address] + (["--verbose"] if verbose else [])
    log = open(path.parent / f"sweep-{time.time_ns()}.log", "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen) -> str:
    proc.log.flush()  # type: ignore[attr-defined]
    return Path(proc.log.name).read_text()[-6000:]  # type: ignore[attr-defined]


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    proc.wait(timeout=timeout)
    out = output(proc)
    assert proc.returncode == 0, out
    return out


def wait_for(pred, proc: subprocess.Popen, what: str, timeout: float = 300):
    deadline = time.time() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"sweep exited before {what}:\n{output(proc)}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def check_complete(exp: Path, seeds: list[int], total: int) -> dict[str, list[int]]:
    trials = read_trials(exp)
    assert sorted(t.seed for t in trials) == seeds  # the full n of the one setting
    out = {}
    for t in trials:
        steps = [h["step"] for h in t.history]
        assert t.status == "finished", (t.name, steps)
        assert steps == sorted(set(steps)) and steps[-1] == total, (t.name, steps)  # never back to 0
        out[t.name] = steps
    return out


def live_train_workers() -> list:
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])


def train_checkpoints(exp: Path) -> int:
    return len(list(exp.glob("train/*/checkpoint_*/checkpoint.pt")))


def test_node_loss_and_worker_kill_mid_sweep(ray_cluster, tmp_path):
    """(a) the node running one trial's worker is removed; (b) the other trial's training worker
    process is SIGKILLed. Both trials resume from their last checkpoints elsewhere and finish."""
    import psutil

    nodes = [ray_cluster.add_node(num_cpus=1, resources={FAKE_GPU: 1}) for _ in range(3)]  # one spare
    ray_cluster.wait_for_nodes()
    store, seeds = tmp_path / "store", [1, 2]
    exp = store / "faults"
    proc = start_sweep(sweep_file(tmp_path, seeds), store, verbose=True)  # Train logs the failures it recovers from
    try:
        wait_for(lambda: len(live_train_workers()) == 2 and len({
            p.parent.parent.name for p in exp.glob("train/*/checkpoint_*/checkpoint.pt")}) == 2,
            proc, "both trials to checkpoint")
        workers = live_train_workers()
        by_id = {n.node_id: n for n in nodes}
        victim_node = next(by_id[w.node_id] for w in workers if w.node_id in by_id)
        other = next(w for w in workers if by_id.get(w.node_id) is not victim_node)
        ray_cluster.remove_node(victim_node, allow_graceful=False)  # (a) a node is lost
        victim = psutil.Process(other.pid)
        os.kill(other.pid, signal.SIGKILL)  # (b) a training worker process dies
        gone, alive = psutil.wait_procs([victim], timeout=10)
        assert gone or all(p.status() == psutil.STATUS_ZOMBIE for p in alive)
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        for n in nodes:
            if n in ray_cluster.list_all_nodes():
                ray_cluster.remove_node(n)
    check_complete(exp, seeds, 160)
    full = Path(proc.log.name).read_text()
    assert "Error count: 1" in full  # the failures did happen, and were recovered
