"""The Ray Tune side of a sweep: one function trial per (setting, seed), each running a Ray Train
``TorchTrainer``; the callbacks feeding the live view (:mod:`.live`); the driver's status file.

Train runs are named after the Tune trial id, so a retried trial or a restored experiment resumes
from the run's last checkpoint. Finished trials are never rerun. The sweep's trackers (its
``tracking:`` block) log from each Train run's rank 0, as a single run's do, under the Train run's
directory as their key: a retried trial and a restored sweep continue the same tracker run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any, Mapping

from ray import tune
from ray.tune.logger import JsonLoggerCallback

from ..config import Resources, RunConfig, SweepSpec, TrialSpec
from ..config.tracking import TrackingSpec
from ..storage import Store, is_uri, join, local_path, split_last
from ..storage.layout import STATUS_FILE, run_name, train_runs, trial_dirname, trial_id_of
from ..tracking import TrackedRun
from .cluster import reap_orphan_placement_groups, trial_driver_request
from .quiet import TRAIN_LOG_LEVEL_ENV, drop_tune_notices
from . import live
from .worker import build_trainer, tracking_env


drop_tune_notices()  # in the driver, whatever --verbose says


def run_trial(param: dict[str, Any], env: dict[str, str] | None = None) -> None:
    """Tune function trainable: one FixMatch run as a Ray Train job (returns nothing, so the
    trial's final result is the last report). ``env``: the driver's tracker settings
    (:func:`.worker.tracking_env`), passed outside the trial's config so no file keeps them."""
    from ray.tune.integration.ray_train import TuneReportCallback

    config = param["trial"]
    ctx = tune.get_context()
    cfg = RunConfig.from_dict(config["run"])
    experiment = config["experiment"]
    name = run_name(config["name"], ctx.get_trial_id())  # deterministic: retries/restores resume
    storage = train_runs(experiment)
    tracked = TrackedRun(key=join(storage, name), name=config["name"], group=split_last(experiment)[1],
                         local_dir=None if is_uri(experiment) else local_path(experiment))
    trainer = build_trainer(
        cfg, Resources(**config["resources"]), storage, name,
        max_failures=config["worker_retries"], callbacks=[TuneReportCallback()],
        trial={k: config[k] for k in ("name", "label", "seed", "setting")},
        log_level=os.environ.get(TRAIN_LOG_LEVEL_ENV, "INFO"),  # the driver's --verbose, via the job's env
        tracking=TrackingSpec.parse(config.get("tracking")), tracked=tracked, env=env,
    )
    trainer.fit()


def trial_config(spec: SweepSpec, trial: TrialSpec, experiment: str) -> dict[str, Any]:
    r = spec.resources
    return {
        "name": trial.name, "label": trial.label, "seed": trial.seed, "setting": trial.setting,
        "run": trial.run.to_dict(), "experiment": experiment, "worker_retries": spec.worker_retries,
        "resources": dataclasses.asdict(r), "tracking": spec.tracking.to_dict(),
    }


class ReapOrphans(tune.Callback):
    """Every 30 s, removes placement groups held by jobs that are over (one state-API call)."""

    def __init__(self, every_s: float = 30.0):
        self.every_s, self.last_reap = every_s, time.time()

    def on_step_end(self, iteration, trials, **info):
        if time.time() - self.last_reap >= self.every_s:
            self.last_reap = time.time()
            reap_orphan_placement_groups()


# Experiments started before the live view pickled a ProgressTable (it reaped too): they restore.
ProgressTable = ReapOrphans


class LiveProgress(tune.Callback):
    """Hands Tune's trial events to the driver's open :func:`.live.watch`. Stateless: the copy Tune
    pickles with the experiment reports to whichever driver resumes it."""

    def __getstate__(self):
        return {}

    def _to_watch(self, kind: str, trial, result=None) -> None:
        if (w := live.active()) is not None:
            with contextlib.suppress(Exception):  # a view that breaks must not stop the sweep
                w.event(kind, trial, result)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._to_watch("start", trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._to_watch("result", trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._to_watch("finish", trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._to_watch("fail", trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._to_watch("retry", trial)

    def on_step_end(self, iteration, trials, **info):
        if (w := live.active()) is not None:
            with contextlib.suppress(Exception):
                w.sync(trials)


def trial_name(trial) -> str:
    """Readable, unique trial directory names: ``<setting>.s<seed>_<trial id>``."""
    return trial_dirname(trial.config["trial"]["name"], trial.trial_id)


def experiment_exists(experiment: str) -> bool:
    """Whether ``experiment`` holds a Tune experiment that can be restored."""
    return tune.Tuner.can_restore(experiment)


def build_tuner(spec: SweepSpec, max_concurrent: int, restore: bool, have: Mapping[str, float]):
    """A new or restored Tuner over the sweep's trials, on a cluster with resources ``have``."""
    # The run records are the results and each Train run writes its own TensorBoard events: Tune's
    # CSV and TensorBoard copies per trial (indexed by iteration, not step) would only add a second,
    # misleading run per trial to TensorBoard. Its JSON log stays: Tune's own result objects read it.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    experiment = spec.experiment_path()
    trainable = tune.with_parameters(run_trial, env=tracking_env() if spec.tracking.enabled else {})
    trainable = tune.with_resources(trainable, trial_driver_request(have))
    if restore:
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True)
    param_space = {"trial": tune.grid_search([trial_config(spec, t, experiment) for t in spec.trials])}
    callbacks: list = [LiveProgress(), ReapOrphans(), JsonLoggerCallback()]
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=False,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=spec.storage, verbose=0,
            failure_config=tune.FailureConfig(max_failures=spec.trial_retries),
            callbacks=callbacks,
        ),
    )


def write_status(experiment: str, results) -> None:
    """The driver's view of each trial after Tune's run, for ``report``: failed for good or not,
    by Train run name (:mod:`fixmatch_ray.storage.layout`)."""
    runs = {}
    for r in results:
        name = r.config["trial"]["name"]
        runs[run_name(name, trial_id_of(r.path, name))] = "failed" if r.error is not None else "ended"
    Store(experiment).write_bytes(STATUS_FILE, json.dumps({"runs": runs}, indent=1).encode())

