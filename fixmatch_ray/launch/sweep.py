"""The sweep service: ``python -m fixmatch_ray.sweep sweeps/paper.yaml``.

Sweep file (:mod:`fixmatch_ray.config.sweep`) → checks (:mod:`.preflight`: storage, lease, data,
cluster capacity, resume) → a Ray Tune experiment (:mod:`.tuner`) with one trial per (setting,
seed), each a Ray Train run.
Re-running the command resumes an interrupted experiment; finished trials are never rerun.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..config import load_sweep
from ..errors import UserError
from ..tracking import check_tracking
from .cluster import reap_orphan_placement_groups
from .interrupt import Interrupts
from .live import watch
from .plan import format_plan, make_plan
from .preflight import (check_capacity, check_data, check_storage, dry_run, joins_cluster, prepare_experiment,
                        read_cluster, release_lease, resolve_paths, step_times, take_lease)
from .quiet import quiet_output

# .tuner imports Ray: imported where needed, after quiet_output has set what Ray reads at import


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
                   help="ms/step per policy, model and precision (JSON, as `bench gpu` writes) for the plan")
    p.add_argument("--card", metavar="GPU",
                   help="the GPU the plan estimates for where nothing measured or the cluster says (H100, H200, "
                        "A100, A10G, L4, V100, T4; default H100)")
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
    """``--dry-run``: the sweep's own checks, reading only, and the plan (:func:`.preflight.dry_run`)."""
    try:
        return dry_run(resolve_paths(load_sweep(args.sweep_file, _overrides(args))), args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, interrupts: Interrupts) -> int:
    from .tuner import build_tuner, write_status

    lease = None
    try:
        spec = resolve_paths(load_sweep(args.sweep_file, _overrides(args)))
        table = step_times(args.step_times)
        check_tracking(spec.tracking)  # a missing mlflow / wandb package: one line, before Ray starts
        check_storage(spec.storage)
        lease = take_lease(spec.experiment_path(), interrupts)
        if not joins_cluster(args.address):
            check_data(spec)  # local: the data this machine's trials will read must be there
        have, cluster = read_cluster(args.address, spec)  # starts or joins Ray: its resources, once
        plan = make_plan(spec, check_capacity(spec, have, args.autoscaling), table, cluster, have, args.card)
        restore = prepare_experiment(spec, args.sweep_file, args.fresh)
        if restore and (n := reap_orphan_placement_groups()):
            print(f"freed {n} placement group(s) left by an earlier, dead driver", file=sys.stderr)
        verb = "resuming" if restore else "starting"
        print(f"{verb} {spec.name}: {len(spec.trials)} trials, up to {plan.at_once} at once, "
              f"in {spec.experiment_path()}", flush=True)
        print("\n".join(format_plan(plan)), flush=True)
        write_status(spec.experiment_path(), [])  # failed trials are retried now: none has failed for good yet
        tuner = build_tuner(spec, plan.at_once, restore, have)
        with watch(spec, plan.at_once):
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


if __name__ == "__main__":
    sys.exit(main())
