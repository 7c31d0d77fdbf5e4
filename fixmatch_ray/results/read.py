"""The one module that knows where results live: the run records of an experiment.

An experiment is ``<storage>/<name>``; each trial's Train run keeps its record at
``train/<run>/metrics.json`` (:mod:`fixmatch_ray.training.record`), which says which trial it
is. Whether a trial failed for good is in the sweep's own ``trials.json``, written by the driver
from Tune's final state. Tune's own files are not read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..storage import Store, join
from ..storage.layout import STATUS_FILE, train_runs
from ..training.record import read_record


@dataclass
class TrialResult:
    name: str
    label: str
    seed: int
    setting: dict[str, Any]
    status: str  # finished | running | failed
    total_steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # median20_acc, best_acc, last_acc, evals
    dataset: dict[str, Any] = field(default_factory=dict)  # classes, image size, normalisation

    @property
    def final(self) -> dict[str, Any]:
        """The last evaluation's row with the run's summary over it."""
        return {**self.history[-1], **self.summary} if self.history else {}


def read_status(experiment: str) -> dict[str, str]:
    """What the sweep driver last wrote of each trial (run name → status), {} if nothing yet."""
    text = Store(experiment).read_text(STATUS_FILE)
    return json.loads(text)["runs"] if text else {}


def read_trials(experiment: str) -> list[TrialResult]:
    """Every trial of an experiment (directory or URI) that has a run record, sorted by setting and seed."""
    runs = train_runs(experiment)
    status = read_status(experiment)
    out = []
    for run in Store(runs).subdirs():
        rec = read_record(join(runs, run))
        if rec is None or not rec.get("trial"):
            continue
        trial, cfg = rec["trial"], rec["config"]
        state = "finished" if rec["finished"] else ("failed" if status.get(run) == "failed" else "running")
        out.append(TrialResult(trial["name"], trial["label"], trial["seed"], trial["setting"], state,
                               cfg["total_steps"], rec["history"], cfg, rec["summary"], rec.get("dataset") or {}))
    return sorted(out, key=lambda t: (t.label, t.seed))
