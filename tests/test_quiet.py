"""The sweep's console: its plan, the live table, errors that matter and the final table by default;
everything Ray prints with --verbose. Real sweeps in their own processes, each starting its own
local Ray in its own temp dir (never joining another one)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rayhead import new_head, remove

ROOT = Path(__file__).resolve().parents[1]

# What Ray prints that the sweep holds back (each seen on the quick demo before: Ray Train's INFO
# lines from its controller and workers, the PreemptionWatcher error, the raylet warning, Tune's
# configuration box and hints, Ray's token-authentication warning).
RAY_NOISE = ("TrainController", "RayTrainWorker", "PreemptionWatcher", "(raylet)", "Configuration for experiment",
             "View detailed results", "tensorboard --logdir", "Token authentication", "Requesting resources")
OURS = ("[sweep] ", "[plan] ", "  digits@20", "starting smoke:", "|", "### ", "mean ± sample std",
        "With a validation split")  # plan, live, tables and their notes


@pytest.fixture
def own_ray():
    env = new_head()  # a temp dir of its own: nothing recorded there, so the sweep starts a local Ray
    for key in ("RAY_DEDUP_LOGS_SKIP_REGEX", "RAY_AIR_NEW_OUTPUT", "FIXMATCH_RAY_TRAIN_LOG_LEVEL", "RAY_AUTH_MODE"):
        env.env.pop(key, None)  # as a user's shell has them: unset
    try:
        yield env
    finally:
        remove(env)  # whatever of that Ray outlived its driver


def sweep(own_ray, storage: Path, *args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "fixmatch_ray.sweep", "sweeps/smoke.yaml", "--storage", str(storage),
                          *args], env=own_ray.env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]


@pytest.mark.ray
@pytest.mark.slow
def test_quiet_by_default_and_everything_with_verbose(own_ray, tmp_path):
    quiet = sweep(own_ray, tmp_path / "q")
    assert quiet[0].startswith("starting smoke: 2 trials, up to 1 at once")
    assert any(line.startswith("[sweep] ") for line in quiet)
    assert "[plan] smoke: 2 trials = 1 setting x 2 seeds" in quiet  # the plan heads the sweep, quiet or not
    assert any(line.startswith("| digits@20 | 2 |") for line in quiet)  # the final table
    noise = [line for line in quiet if any(n in line for n in RAY_NOISE)]
    assert not noise, noise
    strangers = [line for line in quiet if not line.startswith(OURS)]
    assert not strangers, strangers  # nothing but our own lines

    verbose = sweep(own_ray, tmp_path / "v", "--verbose")
    shown = {n for n in RAY_NOISE for line in verbose if n in line}
    # Ray Train's INFO lines and Tune's box come back: the filters above are what removed them
    assert {"TrainController", "RayTrainWorker", "Configuration for experiment", "View detailed results"} <= shown
    assert len(verbose) > len(quiet)


@pytest.mark.parametrize("stream", ["stdout_deduplicator", "stderr_deduplicator"])
def test_quiet_drops_ray_internal_actor_output_only(monkeypatch, stream):
    """The forwarded output of Ray's placement-group janitor is dropped, a trial actor's is kept;
    checked on Ray's own deduplicator objects (no cluster needed)."""
    from ray._private import worker
    from ray._private.ray_logging import LogDeduplicator

    from fixmatch_ray.launch import quiet

    monkeypatch.setattr(worker, stream, LogDeduplicator(5, None, None))  # a fresh one, restored after
    quiet._wrap_deduplicators(worker)
    quiet._wrap_deduplicators(worker)  # idempotent: wrapped once
    dedup = getattr(worker, stream)

    def batch(actor: str, line: str) -> dict:
        return {"ip": "127.0.0.1", "pid": 7, "actor_name": actor, "task_name": "", "is_err": True,
                "lines": [line], "job": "01000000"}

    assert dedup.deduplicate(batch("PlacementGroupCleaner", "Exception in thread PlacementGroupCleanerMonitor:")) == []
    assert dedup.deduplicate({**batch("run_trial", "x"), "lines": [
        "Exception ignored in: <function WeakSet.__init__.<locals>._remove at 0x1>", "Traceback (most recent call last):",
        '  File "worker.py", line 1063, in sigterm_handler', "SystemExit: 1"]}) == []
    kept = dedup.deduplicate(batch("TrainTrainable", "a trial's own line"))
    assert [line for b in kept for line in b["lines"]] == ["a trial's own line"]


def test_quiet_drops_the_sigterm_shutdown_traceback_only():
    """A worker stopped at the end of the job while Python ran a finaliser prints Python's
    'Exception ignored in' traceback through Ray's SIGTERM handler; the quiet driver drops that
    block (seen once on a trial's driver), and keeps every other line and traceback."""
    from fixmatch_ray.launch.quiet import _without_sigterm_tracebacks

    ray_worker = "/site-packages/ray/_private/worker.py"
    shutdown = ["Exception ignored in: <function WeakSet.__init__.<locals>._remove at 0x7f33ef60>",
                "Traceback (most recent call last):",
                '  File "/lib/python3.11/_weakrefset.py", line 39, in _remove',
                "    def _remove(item, selfref=ref(self)):",
                "",  # as Ray forwarded it
                f'  File "{ray_worker}", line 1063, in sigterm_handler',
                "    raise_sys_exit_with_custom_error_message(",
                "SystemExit: 1"]
    other = ["Exception ignored in: <function Foo.__del__ at 0x1>",
             "Traceback (most recent call last):",
             '  File "model.py", line 3, in __del__',
             "ValueError: a real problem"]
    assert _without_sigterm_tracebacks(["before", *shutdown, "after"]) == ["before", "after"]
    assert _without_sigterm_tracebacks(shutdown) == []
    assert _without_sigterm_tracebacks([*other, *shutdown]) == other
    assert _without_sigterm_tracebacks(["a trial's own line", *other]) == ["a trial's own line", *other]
    assert _without_sigterm_tracebacks(["Exception ignored in: <x>"]) == ["Exception ignored in: <x>"]


def test_quiet_drops_ray_trains_shutdown_warning_only():
    """A run stopped by SIGTERM whose workers died first: Ray Train's controller warns "Graceful
    shutdown of backend failed" with a traceback (text as a SLURM requeue printed it); the quiet
    driver drops that block and keeps the lines around it and any other traceback."""
    from fixmatch_ray.launch.quiet import _without_shutdown_warnings

    site = "/venv/lib/python3.11/site-packages/ray"
    warning = ["Graceful shutdown of backend failed. This is expected if one of the workers has crashed.",
               "Traceback (most recent call last):",
               f'  File "{site}/train/v2/_internal/callbacks/backend_setup.py", line 27, in before_execution_group_shutdown',
               "    self._backend.on_shutdown(execution_group, self._backend_config)",
               f'  File "{site}/_private/worker.py", line 1055, in get_objects',
               "    raise value",
               "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.",
               "\tclass_name: RayTrainWorker",
               "\tpid: 8153",
               "The actor is dead because its owner has died. Owner Id: c3db Owner Ip address: 192.0.2.2"]
    other = ["Traceback (most recent call last):", '  File "model.py", line 3, in forward',
             "ValueError: a real problem"]
    assert _without_shutdown_warnings(["before", *warning, "after"]) == ["before", "after"]
    assert _without_shutdown_warnings(warning) == []
    assert _without_shutdown_warnings([*other, *warning, *other]) == [*other, *other]
    assert _without_shutdown_warnings(other) == other
