"""A sweep's MLflow / W&B runs through Ray Tune's own logger callbacks, one run per trial.

Ray's ``MLflowLoggerCallback`` and ``WandbLoggerCallback`` log a trial's whole Tune config and
every result at Tune's iteration. Subclassed here so that a trial's run gets what a single run's
trackers (:mod:`fixmatch_ray.tracking`) give it, under the same names:

- the trial's run config (+ its setting) as params / ``run.config``, once;
- every evaluation's scalars at its **training step** (the reports carry ``step``);
- the summary (``median20_acc``, ``best_acc``, ``last_acc``, ``evals``) when the trial finishes.

A retried trial continues its run (MLflow: found again by its ``fixmatch.run`` tag, also after
the driver restarts; W&B: the trial id is the run id). Imported only when a sweep file has a
``tracking:`` block: trial processes import ``tuner.py`` and need neither package.
"""
from __future__ import annotations

import os
from typing import Any

import ray
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem, _WandbLoggingActor

from ..config import SweepSpec
from ..config.tracking import MLflowSpec, WandbSpec
from ..storage import is_uri
from ..storage.layout import run_dir
from ..tracking import metrics_of, summary_of
from ..tracking import mlflow as mlflow_tracking
from ..training.engine import run_finished


def run_key(trial) -> str:
    """The trial's Train run directory (``run_trial`` names it): the key single runs use too."""
    t = trial.config["trial"]
    return run_dir(t["experiment"], t["name"], trial.trial_id)


def trial_params(trial) -> dict[str, Any]:
    t = trial.config["trial"]
    return {**t["run"], "setting": t["label"]}


def final_summary(trial, failed: bool) -> dict[str, float]:
    """The trial's summary if it trained to its last step, else nothing."""
    last = trial.last_result or {}
    done = not failed and run_finished(last.get("step", 0), trial.config["trial"]["run"]["total_steps"])
    return summary_of(last) if done else {}


class StepMLflowLogger(MLflowLoggerCallback):
    """Ray's MLflow callback, by training step (see the module docstring)."""

    def __init__(self, spec: MLflowSpec, experiment: str):
        super().__init__(tracking_uri=spec.tracking_uri, experiment_name=spec.experiment or experiment,
                         tags=dict(spec.tags))
        self.steps: dict[Any, int] = {}

    def _client(self):
        return mlflow_tracking.client(self.tracking_uri)

    def log_trial_start(self, trial) -> None:
        client = self._client()
        run_id = self._trial_runs.get(trial) or mlflow_tracking.find_run(
            client, self.mlflow_util.experiment_id, run_key(trial))
        if run_id is None:
            tags = {**self.tags, "trial_name": str(trial), "trial_id": trial.trial_id,
                    mlflow_tracking.RUN_TAG: run_key(trial)}
            run_id = self.mlflow_util.start_run(run_name=trial.config["trial"]["name"], tags=tags).info.run_id
        else:  # a retried trial, or one the restarted driver resumes: its run goes on
            client.update_run(run_id, status="RUNNING")
        self._trial_runs[trial] = run_id
        mlflow_tracking.log_params_once(client, run_id, trial_params(trial))

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if "step" not in result:
            return
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        self.steps[trial] = int(result["step"])
        mlflow_tracking.log_step(self._client(), self._trial_runs[trial], metrics_of(result), self.steps[trial])

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial not in self._trial_runs:
            return
        summary = final_summary(trial, failed)
        if summary:
            step = self.steps.get(trial, trial.last_result.get("step", 0))
            mlflow_tracking.log_step(self._client(), self._trial_runs[trial], summary, step)
        super().log_trial_end(trial, failed)


class _StepWandbActor(_WandbLoggingActor):
    """The per-trial W&B process: history rows at the training step, the summary at the end."""

    def run(self):
        os.environ["WANDB_START_METHOD"] = "thread"  # as Ray's actor does: no forking inside Ray
        run = self._wandb.init(*self.args, **self.kwargs)
        while True:
            kind, item = self.queue.get()
            if kind == _QueueItem.END:
                break
            if kind == _QueueItem.RESULT and "summary" in item:
                run.summary.update(item["summary"])
            elif kind == _QueueItem.RESULT:
                run.log(item["metrics"], step=item["step"])
        run.finish()


class StepWandbLogger(WandbLoggerCallback):
    """Ray's W&B callback, by training step (see the module docstring)."""

    _logger_actor_cls = _StepWandbActor

    def __init__(self, spec: WandbSpec, group: str, dir: str | None):
        kwargs = {"mode": spec.mode, "entity": spec.entity, "tags": list(spec.tags), "resume": "allow",
                  "settings": {"silent": True, "console": "off"}}  # W&B's banner would go to the sweep's output
        if dir:
            kwargs["dir"] = dir
        super().__init__(project=spec.project, group=group, **{k: v for k, v in kwargs.items() if v is not None})

    def setup(self, *args, **kwargs):
        if self.kwargs.get("mode") != "offline":
            return super().setup(*args, **kwargs)
        # Ray looks for an API key unless $WANDB_MODE says offline; an offline run needs none
        before = os.environ.get("WANDB_MODE")
        os.environ["WANDB_MODE"] = "offline"
        try:
            return super().setup(*args, **kwargs)
        finally:
            if before is None:
                del os.environ["WANDB_MODE"]
            else:
                os.environ["WANDB_MODE"] = before

    def log_trial_start(self, trial) -> None:
        self._finish_previous(trial)
        if "dir" in self.kwargs:
            os.makedirs(self.kwargs["dir"], exist_ok=True)
        self._start_logging_actor(trial, [], id=trial.trial_id, name=trial.config["trial"]["name"], group=self.group,
                                  project=self.project, config=trial_params(trial), **self.kwargs)

    def _finish_previous(self, trial) -> None:
        """A retried trial: let its previous W&B process finish, so the new one resumes the run
        (Ray's callback would reuse the finished process and lose every later result)."""
        future = self._trial_logging_futures.get(trial)
        if future is not None:
            ray.wait([future], timeout=60)
            self._logging_future_to_trial.pop(future, None)
            self._cleanup_logging_actor(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if "step" not in result:
            return
        if trial not in self._trial_logging_actors:
            self.log_trial_start(trial)
        self._trial_queues[trial].put((_QueueItem.RESULT, {"step": int(result["step"]), "metrics": metrics_of(result)}))

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial not in self._trial_queues:
            return
        summary = final_summary(trial, failed)
        if summary:
            self._trial_queues[trial].put((_QueueItem.RESULT, {"summary": summary}))
        super().log_trial_end(trial, failed)


def tracking_callbacks(spec: SweepSpec) -> list:
    """Tune callbacks for the sweep's ``tracking:`` block (empty when it has none)."""
    experiment = spec.experiment_path()
    out: list = []
    if spec.tracking.mlflow is not None:
        out.append(StepMLflowLogger(spec.tracking.mlflow, spec.name))
    if spec.tracking.wandb is not None:
        w = spec.tracking.wandb
        wdir = w.dir or (experiment if not is_uri(experiment) else None)  # local experiments keep their W&B runs
        out.append(StepWandbLogger(w, group=w.group or spec.name, dir=os.path.abspath(wdir) if wdir else None))
    return out
