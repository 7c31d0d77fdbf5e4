"""deploy/slurm/fixmatch.sbatch on a real SLURM (slurmctld, slurmd, munge) of the test's own on this
machine (tests/slurmlocal.py), CPU only, submitted with sbatch as the README says.

One uninterrupted run gives the table and the reference histories. A second run of the same sweep
is stopped twice: first the way a time limit (or a preemption that sends the job's signal) does,
SIGUSR1 to the batch script, after which the driver exits 143 and the job requeues itself; then
with `scontrol requeue`, Slurm's own SIGTERM to every process of the job. It must end with every
trial's history exactly equal to the uninterrupted run's and its finished trial never rerun, and
each run must leave nothing of Ray behind. Slurm holds a requeued job for two minutes before it
may start again; the test lets it start at once (scontrol update StartTime=now).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
import slurmlocal
import yaml

from fixmatch_ray import results
from fixmatch_ray.results.read import read_trials
from test_durability import histories

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "slurm" / "fixmatch.sbatch"
pytestmark = [pytest.mark.slurm, pytest.mark.ray, pytest.mark.slow]
SHORT, LONG = 12, 80  # steps of the two trials: one done while the other still runs
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


@pytest.fixture(scope="module")
def slurm():
    why = slurmlocal.unavailable()
    if why:
        pytest.skip(why)
    cluster = slurmlocal.start()
    try:
        yield cluster
    finally:
        slurmlocal.remove(cluster)


@pytest.fixture
def ray_dir():
    """FIXMATCH_RAY_TMPDIR of the jobs: short (Ray's unix sockets live under it), the test's own."""
    path = Path(tempfile.mkdtemp(prefix="sr"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sweep_file(tmp_path: Path) -> Path:
    doc = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    doc["name"] = "slurm"
    doc["base"].update(total_steps=SHORT, eval_step=4)
    doc["grid"] = [{"num_labeled": [20]}, {"num_labeled": [30], "total_steps": LONG}]
    doc["seeds"] = [1]
    doc["resources"] = {"workers": 1, "cpus_per_worker": 1}
    doc["max_concurrent_trials"] = 2
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def submit(slurm, sweep: Path, store: Path, log: Path, ray_dir: Path) -> int:
    """The README's command on this one-node, 2-CPU, GPU-less cluster."""
    return slurm.submit("--nodes=1", "--cpus-per-task=2", "--gpus-per-node=0", f"--output={log}",
                        str(SCRIPT), str(sweep), "--storage", str(store), cwd=ROOT,
                        env={"FIXMATCH_PYTHON": sys.executable, "FIXMATCH_RAY_TMPDIR": str(ray_dir)})


def progress(exp: Path) -> dict[str, tuple[str, int]]:
    """trial -> (status, last recorded step)."""
    try:
        return {t.name: (t.status, t.final.get("step", 0)) for t in read_trials(exp)} if exp.exists() else {}
    except (OSError, ValueError):  # a record being replaced right now: ask again
        return {}


def wait_until(pred, slurm, job: int, log: Path, what: str, timeout: float = 240):
    deadline = time.time() + timeout
    while not (value := pred()):
        state = slurm.job(job).get("JobState")
        if state in DONE or time.time() > deadline:
            raise AssertionError(f"no {what} (job {job} {state}):\n{log.read_text()[-4000:] if log.exists() else ''}")
        time.sleep(0.3)
    return value


def requeued(slurm, job: int, restarts: int, ray_dir: Path, log: Path) -> None:
    """Wait for the job to be pending again after its ``restarts``-th requeue (every process of
    its last run has ended: Slurm requeues a job once it has completed); nothing of that run's Ray
    may be left on the node. Then let it start now."""
    info = slurm.wait(job, {"PENDING"}, 120, "after the requeue")
    assert info["Restarts"] == str(restarts), info
    assert nothing_left(ray_dir) == [], log.read_text()[-3000:]
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")


def finished_records(exp: Path) -> dict[Path, tuple[int, bytes]]:
    """Each finished trial's run record: (modification time, content)."""
    out = {}
    for record in (exp / "train").glob("*/metrics.json"):
        data = record.read_bytes()
        if json.loads(data).get("finished"):
            out[record] = (record.stat().st_mtime_ns, data)
    return out


def nothing_left(ray_dir: Path) -> list[str]:
    """What the jobs' Ray left on this node: its directories, and processes naming them."""
    mine = {os.getpid()}
    procs = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) not in mine:
            try:
                if f"{ray_dir}/".encode() in (p / "cmdline").read_bytes():
                    procs.append(p.name)
            except OSError:
                pass
    return [str(d) for d in ray_dir.iterdir()] + [f"pid {p}" for p in procs]


@pytest.mark.timeout(480)  # three runs of the job and an uninterrupted one: ~4 minutes here
def test_sweep_on_slurm_survives_requeues(slurm, tmp_path, ray_dir):
    sweep = sweep_file(tmp_path)
    reference, log = tmp_path / "reference", tmp_path / "reference.log"
    job = submit(slurm, sweep, reference, log, ray_dir)
    info = slurm.wait(job, DONE, 300, "(the uninterrupted run)")
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-4000:]
    assert "| digits@20 | 1 |" in text and "| digits@30 | 1 |" in text and "the sweep exited 0" in text
    assert results.summary(str(reference / "slurm")).n.tolist() == [1, 1]
    assert nothing_left(ray_dir) == [], text[-3000:]
    expected = histories(reference / "slurm")
    assert sorted(len(h) for h in expected.values()) == [SHORT // 4, LONG // 4]

    store, log = tmp_path / "requeued", tmp_path / "requeued.log"
    exp = store / "slurm"
    job = submit(slurm, sweep, store, log, ray_dir)
    # 1. the time limit is near: SIGUSR1 to the batch script (as --signal=B:USR1@300 sends it)
    # (once Tune, not only the trial's record, has it finished: a trial whose record says finished
    # but which Tune still counts as running is resumed from its last checkpoint and reports again)
    wait_until(lambda: log.exists() and "digits@20 seed 1: finished" in log.read_text()
               and max(step for _, step in progress(exp).values()) >= 8, slurm, job, log, "trial mid-run")
    slurm.run("scancel", "--batch", "--signal=USR1", str(job))
    requeued(slurm, job, 1, ray_dir, log)
    text = log.read_text()
    assert "the sweep exited 143" in text and f"requeueing job {job}" in text, text[-4000:]
    assert "SIGTERM received: stopping the trials" in text and "Traceback" not in text, text[-4000:]
    finished = finished_records(exp)
    assert len(finished) == 1
    stopped_at = max(step for _, step in progress(exp).values())
    assert stopped_at < LONG, "the signal landed too late to test anything"
    # 2. Slurm requeues the job itself (an administrator, a preemption): SIGTERM to every process
    wait_until(lambda: max(step for _, step in progress(exp).values()) > stopped_at, slurm, job, log,
               "progress after the first requeue")
    slurm.run("scontrol", "requeue", str(job))
    assert max(step for _, step in progress(exp).values()) < LONG, "the requeue landed too late"
    requeued(slurm, job, 2, ray_dir, log)
    info = slurm.wait(job, DONE, 300, "(the requeued run)")
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-4000:]
    assert [f"run {i}:" in text for i in (1, 2, 3)] == [True] * 3 and text.count("resuming slurm") == 2
    assert histories(exp) == expected  # same steps, accuracies and losses: no row lost or repeated
    assert {p: finished_records(exp)[p] for p in finished} == finished  # the finished trial never ran again
    assert nothing_left(ray_dir) == [], text[-3000:]
