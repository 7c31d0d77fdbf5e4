"""MLflow: one MLflow run per training run (optional extra: ``pip install -e '.[mlflow]'``).

A run is found again by its ``fixmatch.run`` tag (the run's directory or URI), so a resumed run,
a retried sweep trial or a restored sweep continues its MLflow run instead of starting another.
Params: the run's resolved config. Metrics: every evaluation's numbers under their record names
at its training step, and at the end the summary (``median20_acc``, ``best_acc``, ``last_acc``,
``evals``) at the last step (a number the last evaluation already logged there is not repeated).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config.cli import opt
from ..config.strict import Options, require
from ..errors import ConfigError
from .base import TrackedRun, Tracker, metrics_of, params_of, summary_of

RUN_TAG = "fixmatch.run"  # the run's directory or URI: finds the MLflow run of a resumed run


def require_mlflow():
    """The ``mlflow`` module, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError("tracking.mlflow: the mlflow package is not installed; "
                          "pip install -e '.[mlflow]' (or pip install mlflow)") from None
    return mlflow


def client(tracking_uri: str | None):
    """An ``MlflowClient`` for ``tracking_uri`` (None: MLflow's default); a store MLflow refuses is
    a one-line :class:`ConfigError`."""
    require_mlflow()
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=tracking_uri)
    except Exception as e:  # MlflowException, or an ImportError of the store's driver (sqlalchemy)
        where = f"tracking.mlflow.tracking_uri {tracking_uri!r}" if tracking_uri else "tracking.mlflow (default store)"
        text = str(e)
        if "MLFLOW_ALLOW_FILE_STORE" in text:  # MLflow 3 refuses file stores unless told otherwise
            text = ("MLflow refuses file stores unless MLFLOW_ALLOW_FILE_STORE=true is set; set it, or use a "
                    "database (sqlite:///path/mlflow.db) or an MLflow server (http://...)")
        elif isinstance(e, ImportError):
            text = f"{text} (this store needs the full mlflow package: pip install mlflow)"
        raise ConfigError(f"{where}: {text.splitlines()[0] if text else type(e).__name__}") from None


@dataclass(frozen=True)
class MLflowOptions(Options):
    """``tracking.mlflow``."""

    # None: MLflow's own default ($MLFLOW_TRACKING_URI, else its local store); a server
    # (http://...), a database (sqlite:///path/mlflow.db) or a directory (file:///path/mlruns).
    tracking_uri: str | None = opt(None, "with --tracking mlflow: tracking URI (default MLflow's: "
                                   "$MLFLOW_TRACKING_URI)", flag="--mlflow-uri")
    experiment: str | None = opt(None, "with --tracking mlflow: experiment name (default: the sweep's name; "
                                 "a single run's 'fixmatch')")
    tags: dict[str, str] = field(default_factory=dict)  # set on every run

    def check(self) -> None:
        require(self.tracking_uri is None or self.tracking_uri.strip() != "",
                "tracking_uri: is empty; leave it out for MLflow's default")
        require(self.experiment is None or self.experiment.strip() != "",
                "experiment: is empty; leave it out to use the sweep's name")


def experiment_id(mlflow_client, name: str) -> str:
    found = mlflow_client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else mlflow_client.create_experiment(name)


def find_run(mlflow_client, experiment: str, key: str) -> str | None:
    """The id of the MLflow run tagged ``fixmatch.run = key`` in the experiment, if there is one."""
    quoted = key.replace("'", "\\'")
    runs = mlflow_client.search_runs([experiment], filter_string=f"tags.`{RUN_TAG}` = '{quoted}'", max_results=1)
    return runs[0].info.run_id if runs else None


def log_params_once(mlflow_client, run_id: str, config: Mapping[str, Any]) -> None:
    """Log the config as params; keys the run already has keep their value (a resumed run may change
    how it runs, e.g. ``num_workers``, and MLflow refuses to change a param)."""
    from mlflow.entities import Param

    have = mlflow_client.get_run(run_id).data.params
    new = [Param(k, v[:6000]) for k, v in params_of(config).items() if k not in have]
    for i in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run_id, params=new[i:i + 100])


def log_step(mlflow_client, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    mlflow_client.log_batch(run_id, metrics=[Metric(k, v, now, int(step)) for k, v in metrics.items()])


class MLflowTracker(Tracker):
    """One run's MLflow run, created (or found again) when the run starts."""

    name = "mlflow"
    Options = MLflowOptions

    @classmethod
    def check(cls, options: MLflowOptions) -> None:
        """The package is there and MLflow accepts the store."""
        client(options.tracking_uri)

    def __init__(self, options: MLflowOptions, run: TrackedRun):
        super().__init__(options, run)
        self.uri, self.experiment = options.tracking_uri, options.experiment or run.group or "fixmatch"
        self.key, self.run_name, self.tags = run.key, run.name, dict(options.tags)
        self.client, self.run_id, self.step, self.finished = None, None, 0, False
        self.last: dict[str, float] = {}  # the last evaluation's numbers (the summary does not repeat them)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.client = client(self.uri)
        exp = experiment_id(self.client, self.experiment)
        self.run_id = find_run(self.client, exp, self.key)
        if self.run_id is None:
            run = self.client.create_run(exp, run_name=self.run_name, tags={**self.tags, RUN_TAG: self.key})
            self.run_id = run.info.run_id
        else:
            self.client.update_run(self.run_id, status="RUNNING")
        log_params_once(self.client, self.run_id, config)

    def log_metrics(self, record: Mapping[str, Any], step: int) -> None:
        if self.run_id is not None:
            self.last = metrics_of(record)
            log_step(self.client, self.run_id, self.last, step)
            self.step = step

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        if self.run_id is not None:
            new = {k: v for k, v in summary_of(summary).items() if self.last.get(k) != v}
            log_step(self.client, self.run_id, new, self.step)
            self.finished = True

    def close(self) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FINISHED" if self.finished else "KILLED")
            self.run_id = None
