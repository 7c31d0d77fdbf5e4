"""The sweep service: ``python -m fixmatch_ray.sweep sweeps/paper.yaml``.

Sweep file (:mod:`fixmatch_ray.config.sweep`) → checks (storage, data, cluster capacity) → a Ray
Tune experiment (:mod:`.tuner`) with one trial per (setting, seed), each a Ray Train run.
Re-running the command resumes an interrupted experiment; finished trials are never rerun.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from ..config import ConfigError, SweepSpec, load_sweep
from ..errors import UserError
from ..storage import Store, internal_file, is_uri
from ..tracking import check_tracking
from .cluster import cluster_resources, ensure_ray, normalize_storage, quiet_output, reap_orphan_placement_groups
from .dryrun import SPEC_FILE, dry_run
from .interrupt import Interrupts
from .lease import LEASE_FILE, Lease
from .live import watch
from .plan import DEFAULTS, cluster_line, format_plan, load_step_times, make_plan, trials_at_once

# .tuner imports Ray: imported where needed, after quiet_output has set what Ray reads at import


def check_capacity(spec: SweepSpec, autoscaling: bool) -> int:
    """How many trials the cluster can run at once; an impossible request is a ConfigError."""
    return trials_at_once(spec.resources, cluster_resources(), autoscaling)


def check_data(spec: SweepSpec) -> None:
    """Load each dataset the trials use once (downloading it if allowed): a missing dataset
    is one line here instead of failing every trial."""
    from ..data.datasets import check_dataset
    from ..errors import DataError

    runs = {(t.run.dataset, t.run.data_dir, t.run.download, t.run.image_size) for t in spec.trials}
    for name, root, download, image_size in sorted(runs, key=repr):
        try:
            check_dataset(name, root, download, image_size)  # a folder dataset: decoded once, for every trial
        except DataError as e:
            raise ConfigError(str(e)) from None


def check_storage(storage: str) -> None:
    if "://" in storage:
        return
    try:
        Path(storage).mkdir(parents=True, exist_ok=True)
        probe = Path(storage) / f".fixmatch_write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"storage: cannot write to {storage!r} ({e.strerror or e}); choose a writable path") from None


def prepare_experiment(spec: SweepSpec, sweep_file: str, fresh: bool) -> bool:
    """Check the experiment directory; True when an earlier run of it is to be resumed.

    A resumed experiment must come from the same sweep file (same trials); ``--fresh`` moves
    the old experiment aside (nothing is deleted) and starts again.
    """
    from .tuner import experiment_exists

    experiment = spec.experiment_path()
    store = Store(experiment)
    text = Path(sweep_file).read_text(encoding="utf-8")
    if is_uri(experiment):
        exists = experiment_exists(experiment)
    else:
        exists = Path(experiment).exists() and any(not _lease_file(p.name) for p in Path(experiment).iterdir())
    if exists and fresh:
        if is_uri(experiment):
            raise ConfigError(f"--fresh: move {experiment} aside yourself (remote storage) or use another name")
        aside = Path(f"{experiment}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        aside.mkdir()
        for child in Path(experiment).iterdir():  # everything but our lease, which stays held
            if not _lease_file(child.name):
                shutil.move(child, aside / child.name)
        print(f"moved the earlier experiment to {aside}", file=sys.stderr)
        exists = False
    if exists:
        if not experiment_exists(experiment):
            raise ConfigError(f"{experiment} exists but holds no Tune experiment; use --fresh or another name")
        old = store.read_text(SPEC_FILE)
        if old is not None and old != text:
            raise ConfigError(
                f"{sweep_file} differs from the one {experiment} was started with; resume with the "
                f"same file, or pass --fresh (the old experiment is moved aside) or another --name"
            )
        return True
    store.write_bytes(SPEC_FILE, text.encode())
    return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fixmatch_ray.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_file", help="sweep YAML (see sweeps/)")
    p.add_argument("--storage", help="override 'storage': local dir, s3://, gs:// or a shared mount")
    p.add_argument("--name", help="override the experiment 'name'")
    p.add_argument("--address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--max-concurrent-trials", type=int, help="override 'max_concurrent_trials'")
    p.add_argument("--fresh", action="store_true", help="start over: move an earlier experiment aside")
    p.add_argument("--autoscaling", action="store_true",
                   help="the cluster adds nodes on demand: don't reject requests it cannot meet now")
    p.add_argument("--no-report", action="store_true", help="skip the results table at the end")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything and print the plan (trials, resources, GPU-hours); start and write nothing")
    p.add_argument("--step-times", metavar="FILE",
                   help="ms/step per model and precision (JSON, as `bench gpu` writes) for the plan's estimates")
    p.add_argument("--verbose", action="store_true",
                   help="print everything Ray prints (start-up, Ray Train's INFO lines, known-harmless warnings)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_output(args.verbose)
    if args.dry_run:
        return _plan_only(args)
    with Interrupts() as interrupts:
        return _main(args, interrupts)


def _overrides(args: argparse.Namespace) -> dict:
    return {"storage": args.storage, "name": args.name, "max_concurrent_trials": args.max_concurrent_trials}


def _plan_only(args: argparse.Namespace) -> int:
    """``--dry-run``: the checks and the plan, before anything imports Ray (:mod:`.dryrun`)."""
    try:
        return dry_run(_absolute_paths(load_sweep(args.sweep_file, _overrides(args))), args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, interrupts: Interrupts) -> int:
    from .tuner import build_tuner, write_status

    lease = None
    try:
        spec = _absolute_paths(load_sweep(args.sweep_file, _overrides(args)))
        table = load_step_times(args.step_times) if args.step_times else DEFAULTS
        check_tracking(spec.tracking)  # a missing mlflow / wandb package: one line, before Ray starts
        check_storage(spec.storage)
        lease = take_lease(spec.experiment_path(), interrupts)
        if not (args.address or os.environ.get("RAY_ADDRESS")):
            check_data(spec)  # local: the data this machine's trials will read must be there
        r = spec.resources
        ensure_ray(args.address, min_cpus=r.workers * r.cpus_per_worker)
        fits = check_capacity(spec, args.autoscaling)
        restore = prepare_experiment(spec, args.sweep_file, args.fresh)
        if restore and (n := reap_orphan_placement_groups()):
            print(f"freed {n} placement group(s) left by an earlier, dead driver", file=sys.stderr)
        concurrent = min(spec.max_concurrent_trials or fits, len(spec.trials))
        verb = "resuming" if restore else "starting"
        print(f"{verb} {spec.name}: {len(spec.trials)} trials, up to {concurrent} at once, "
              f"in {spec.experiment_path()}", flush=True)
        have = cluster_resources()
        plan = make_plan(spec, have, table, args.autoscaling, cluster_line("the cluster", have))
        print("\n".join(format_plan(plan)), flush=True)
        write_status(spec.experiment_path(), [])  # failed trials are retried now: none has failed for good yet
        tuner = build_tuner(spec, concurrent, restore)
        with watch(spec, concurrent):
            results = tuner.fit()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return interrupts.exit_code
    finally:
        if lease is not None:
            release_lease(lease, spec.experiment_path())
    if lease.lost:
        print(f"error: {lease.lost_message}; this driver stopped, the other one goes on", file=sys.stderr)
        return 1
    if interrupts.signum is not None:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return interrupts.exit_code
    write_status(spec.experiment_path(), results)
    if not args.no_report:
        from ..results.report import report_experiment

        report_experiment(spec.experiment_path())
    if results.num_errors:
        print(f"error: {results.num_errors} of {len(results)} trials failed for good (their error.txt "
              f"under {spec.experiment_path()} says why); re-run the command to retry them", file=sys.stderr)
        return 1
    return 0


def take_lease(experiment: str, interrupts: Interrupts) -> Lease:
    """The experiment's lease (one live driver per experiment), or :class:`LeaseHeld`. Losing it
    later (another driver judged this one dead) stops the sweep like an interrupt."""
    lease = Lease(Store(experiment), LEASE_FILE, on_lost=lambda message: interrupts.stop())
    notice = lease.acquire()
    if notice:
        print(notice, file=sys.stderr, flush=True)
    return lease


def release_lease(lease: Lease, experiment: str) -> None:
    """Release the lease; an experiment directory left empty (a sweep refused before it wrote
    anything) is removed, so nothing half-made stays behind."""
    lease.release()
    if is_uri(experiment):
        return
    path = Path(experiment)
    with contextlib.suppress(OSError):
        if all(_lease_file(p.name) for p in path.iterdir()):  # only the local lease's lock file is left
            shutil.rmtree(path)


def _lease_file(name: str) -> bool:
    """The lease and the lock file its local conditional writes keep beside it."""
    return name == LEASE_FILE or internal_file(name)


def _absolute_paths(spec: SweepSpec) -> SweepSpec:
    """Trials run in other working directories: make local paths absolute."""

    trials = tuple(
        dataclasses.replace(t, run=t.run.replace(data_dir=os.path.abspath(t.run.data_dir)))
        if "://" not in t.run.data_dir else t for t in spec.trials
    )
    return dataclasses.replace(spec, storage=normalize_storage(spec.storage), trials=trials)


if __name__ == "__main__":
    sys.exit(main())
