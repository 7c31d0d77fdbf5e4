"""The sweep service: ``python -m fixmatch_ray.sweep sweeps/paper.yaml``.

YAML grid (``grid.py``) → a Ray Tune experiment with one function trial per (setting, seed);
each trial builds the Ray Train ``TorchTrainer`` of ``worker.py`` and forwards its rank-0 reports
to Tune. Train runs are named after the Tune trial id, so a retried trial or a restored
experiment resumes from the run's last checkpoint. Re-running the command resumes an
interrupted experiment; finished trials are never rerun.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ray import tune

from ..config import ConfigError, Resources, SweepSpec, Trial, load_sweep
from ..results.read import STATUS_FILE, TRAIN_DIR
from ..storage import Store, join
from .cluster import DRIVER_RESOURCE, ensure_ray, normalize_storage
from .worker import build_trainer

SPEC_FILE = "sweep.yaml"  # the sweep file as given, saved in the experiment directory


def run_trial(param: dict[str, Any]) -> None:
    """Tune function trainable: one FixMatch run as a Ray Train job (returns nothing, so the
    trial's final result is the last report)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..config import RunConfig

    config = param["trial"]
    ctx = tune.get_context()
    cfg = RunConfig.from_dict(config["run"])
    name = f"{config['name']}-{ctx.get_trial_id()}"  # deterministic: retries/restores resume
    trainer = build_trainer(
        cfg, Resources(**config["resources"]), join(config["experiment"], TRAIN_DIR), name,
        max_failures=config["worker_retries"], callbacks=[TuneReportCallback()],
        trial={k: config[k] for k in ("name", "label", "seed", "setting")},
    )
    trainer.fit()


def trial_config(spec: SweepSpec, trial: Trial, experiment: str) -> dict[str, Any]:
    r = spec.resources
    return {
        "name": trial.name, "label": trial.label, "seed": trial.seed, "setting": trial.setting,
        "run": trial.run.to_dict(), "experiment": experiment, "worker_retries": spec.worker_retries,
        "resources": dataclasses.asdict(r),
    }


def check_capacity(spec: SweepSpec, autoscaling: bool) -> int:
    """How many trials the cluster can run at once; an impossible request is a ConfigError."""
    import ray

    have = ray.cluster_resources()
    r = spec.resources
    per_worker = {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker, **r.custom_per_worker}
    fits = []
    for res, each in per_worker.items():
        amount = r.workers * each
        if amount <= 0:
            continue
        total = have.get(res, 0.0)
        if total < amount and not autoscaling:
            raise ConfigError(
                f"resources: a trial needs {amount:g} {res} ({r.workers} workers x {each:g}) but the "
                f"cluster has {total:g}; lower the request, or pass --autoscaling if nodes will be added"
            )
        fits.append(math.floor(total / amount + 1e-9) if total >= amount else 1)
    return max(1, min(fits))


def check_data(spec: SweepSpec) -> None:
    """Load each dataset the trials use once (downloading it if allowed): a missing dataset
    is one line here instead of failing every trial."""
    from ..data.datasets import load_dataset
    from ..errors import DataError

    for name, root, download in sorted({(t.run.dataset, t.run.data_dir, t.run.download) for t in spec.trials}):
        try:
            load_dataset(name, root, "train", download=download)
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


def reap_orphan_placement_groups() -> int:
    """Remove placement groups still held by jobs that are over; the number removed.

    A sweep driver killed at the wrong moment can leave its Train run's placement group behind
    (its controller creates one just as the job is torn down: seen here with Ray 2.60), and the
    resumed sweep then waits forever for the GPUs it holds. Detached groups are left alone.
    """
    import ray
    from ray.util.placement_group import PlacementGroup
    from ray.util.state import list_jobs, list_placement_groups

    try:
        live = {j.job_id for j in list_jobs() if j.status == "RUNNING" and j.job_id}
        groups = list_placement_groups(detail=True, limit=10000)
    except Exception:  # no dashboard/state API: nothing we can check
        return 0
    removed = 0
    for g in groups:
        if g.state in ("CREATED", "PENDING", "RESCHEDULING") and not g.is_detached and g.creator_job_id not in live:
            ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(g.placement_group_id)))
            removed += 1
    return removed


class ProgressTable(tune.Callback):
    """A live table of running trials (status, step, accuracy, images/s) and the sweep's ETA."""

    def __init__(self, n: int, every_s: float = 15.0):
        self.n, self.every_s, self.last, self.last_reap = n, every_s, 0.0, time.time()
        self.latest: dict[str, dict[str, Any]] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.latest[trial.trial_id] = result
        if time.time() - self.last >= self.every_s:
            self.show(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.show(trials)

    def on_step_end(self, iteration, trials, **info):
        if time.time() - self.last_reap >= 30:  # cheap (one state-API call) and only every 30 s
            self.last_reap = time.time()
            reap_orphan_placement_groups()

    def show(self, trials) -> None:
        self.last = time.time()
        print(render_progress(trials, self.latest, self.n), flush=True)


def render_progress(trials, latest: dict[str, dict[str, Any]], n: int) -> str:
    """Text table of the running trials plus counts and an ETA (remaining steps / current rate)."""
    counts: dict[str, int] = {}
    rows, remaining, rate = [], 0.0, 0.0
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
        res = latest.get(t.trial_id, {})
        total = t.config["trial"]["run"]["total_steps"]
        step = res.get("step", 0)
        if t.status not in ("TERMINATED", "ERROR"):
            remaining += total - step
        if t.status == "RUNNING":
            if res.get("samples_per_step"):
                rate += res["images_per_s"] / res["samples_per_step"]
            acc = f"{res['test_acc']:6.2f}" if "test_acc" in res else "     -"
            ips = f"{res['images_per_s']:8.0f}" if "images_per_s" in res else "       -"
            rows.append(f"  {t.config['trial']['name']:<36} {step:>8}/{total:<8} acc {acc}  {ips} img/s")
    if trials:  # trials Tune has not created yet (max_concurrent_trials) are still to run
        remaining += max(0, n - len(trials)) * trials[-1].config["trial"]["run"]["total_steps"]
    eta = f"{remaining / rate / 60:.1f} min" if rate > 0 else "unknown"
    head = ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
    return "\n".join([f"[sweep] {head} of {n} trials | ETA {eta}", *rows])


def trial_name(trial) -> str:
    """Readable, unique trial directory names: ``<setting>.s<seed>_<trial id>``."""
    return f"{trial.config['trial']['name']}_{trial.trial_id}"


def build_tuner(spec: SweepSpec, max_concurrent: int, restore: bool):
    """A new or restored Tuner over the sweep's trials."""
    import ray

    experiment = spec.experiment_path()
    # the trial driver holds no GPU: the driver resource where the cluster has it, else a sliver of CPU
    has_driver_slots = ray.cluster_resources().get(DRIVER_RESOURCE, 0) > 0
    trainable = tune.with_resources(run_trial, {DRIVER_RESOURCE: 1} if has_driver_slots else {"CPU": 0.01})
    if restore:
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True)
    param_space = {"trial": tune.grid_search([trial_config(spec, t, experiment) for t in spec.trials])}
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=False,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=spec.storage, verbose=0,
            failure_config=tune.FailureConfig(max_failures=spec.trial_retries),
            callbacks=[ProgressTable(len(spec.trials))],
        ),
    )


def prepare_experiment(spec: SweepSpec, sweep_file: str, fresh: bool) -> bool:
    """Check the experiment directory; True when an earlier run of it is to be resumed.

    A resumed experiment must come from the same sweep file (same trials); ``--fresh`` moves
    the old experiment aside (nothing is deleted) and starts again.
    """
    experiment = spec.experiment_path()
    store = Store(experiment)
    text = Path(sweep_file).read_text(encoding="utf-8")
    if "://" in experiment:
        exists = tune.Tuner.can_restore(experiment)
    else:
        exists = Path(experiment).exists() and any(Path(experiment).iterdir())
    if exists and fresh:
        if "://" in experiment:
            raise ConfigError(f"--fresh: move {experiment} aside yourself (remote storage) or use another name")
        aside = f"{experiment}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.move(experiment, aside)
        print(f"moved the earlier experiment to {aside}", file=sys.stderr)
        exists = False
    if exists:
        if not tune.Tuner.can_restore(experiment):
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = {"storage": args.storage, "name": args.name, "max_concurrent_trials": args.max_concurrent_trials}
        spec = load_sweep(args.sweep_file, overrides)
        spec = _absolute_paths(spec)
        check_storage(spec.storage)
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
        results = build_tuner(spec, concurrent, restore).fit()
        write_status(spec.experiment_path(), results)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130
    if not args.no_report:
        from ..results.report import report_experiment

        report_experiment(spec.experiment_path())
    if results.num_errors:
        print(f"error: {results.num_errors} of {len(results)} trials failed for good (their error.txt "
              f"under {spec.experiment_path()} says why); re-run the command to retry them", file=sys.stderr)
        return 1
    return 0


def write_status(experiment: str, results) -> None:
    """The driver's view of each trial after Tune's run, for ``report``: failed for good or not.

    A trial's Train run is ``<trial name>-<trial id>`` (see :func:`run_trial`); its directory
    under Tune is ``<trial name>_<trial id>``."""
    runs = {}
    for r in results:
        name = r.config["trial"]["name"]
        trial_id = r.path.rstrip("/").rsplit("_", 1)[-1]
        runs[f"{name}-{trial_id}"] = "failed" if r.error is not None else "ended"
    Store(experiment).write_bytes(STATUS_FILE, json.dumps({"runs": runs}, indent=1).encode())


def _absolute_paths(spec: SweepSpec) -> SweepSpec:
    """Trials run in other working directories: make local paths absolute."""

    trials = tuple(
        dataclasses.replace(t, run=t.run.replace(data_dir=os.path.abspath(t.run.data_dir)))
        if "://" not in t.run.data_dir else t for t in spec.trials
    )
    return dataclasses.replace(spec, storage=normalize_storage(spec.storage), trials=trials)


if __name__ == "__main__":
    sys.exit(main())
