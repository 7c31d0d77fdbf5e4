"""Read what the trackers wrote back with the trackers' own readers (MLflow's client, W&B's CLI)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def pairs_approx(pairs: list[tuple[int, float]]) -> list[tuple[int, Any]]:
    """``[(step, value)]`` with each value compared approximately and each step exactly (pytest
    8.4+ refuses ``pytest.approx`` of nested data)."""
    return [(step, pytest.approx(value)) for step, value in pairs]


def mlflow_runs(uri: str, experiment: str) -> dict[str, dict[str, Any]]:
    """run name -> {status, params, tags, history: {metric: [(step, value)]}} of an MLflow experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {uri}"
    out = {}
    for run in client.search_runs([exp.experiment_id]):
        history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                   for key in run.data.metrics}
        out[run.info.run_name] = {"status": run.info.status, "params": run.data.params, "tags": run.data.tags,
                                  "history": history}
    return out


def wandb_run(run_dir: Path) -> dict[str, Any]:
    """An offline W&B run directory, read by the installed wandb's own reader of ``.wandb`` logs
    (``wandb leet inspect --json``): {config, summary, history: [{_step, metrics...}], name, run_id}."""
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json"]
    summary = json.loads(subprocess.run([*cmd, "--summary", str(run_dir)], check=True, capture_output=True,
                                        text=True, timeout=120).stdout)
    records = subprocess.run([*cmd, str(run_dir)], check=True, capture_output=True, text=True, timeout=120).stdout
    history = [json.loads(line)["history"] for line in records.splitlines()
               if line.strip() and json.loads(line)["type"] == "history"]
    return {**summary, "history": [{**h["item"], "step": h["step"]["num"]} for h in history]}


def wandb_runs(root: Path) -> dict[str, dict[str, Any]]:
    """run name -> the run, for every offline run under ``root/wandb``."""
    runs = [wandb_run(d) for d in sorted((Path(root) / "wandb").glob("offline-run-*"))]
    return {r["name"]: r for r in runs}
