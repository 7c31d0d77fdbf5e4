"""The project's own record of a run: its whole evaluation history, next to its checkpoints.

One JSON document (``metrics.json`` in the run's directory, a local path or a URI): the resolved
config, every evaluation's row (step, accuracies, losses, mask rate, lr, images/s, wall time),
the summary (median of the last 20 evaluations...) and whether the run finished. Rank 0 writes it
whole and atomically after each checkpoint is saved, so it is never ahead of the checkpoint it
follows; a resumed run rewrites it from the restored checkpoint's history first, so rows after
the restored step are replaced, never duplicated. Results are read from here, never from logs
or Tune's files.
"""
from __future__ import annotations

import json
from typing import Any

from ..storage import Store
from .engine import summarize

RECORD_FILE = "metrics.json"


def record_doc(config: dict[str, Any], history: list[dict[str, Any]],
               trial: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a run with this config and evaluation history; ``trial`` says which sweep
    trial the run is (name, label, seed, setting), None for a single run."""
    step = history[-1]["step"] if history else 0
    return {"config": config, "trial": trial, "summary": summarize(history), "step": step,
            "finished": step >= config["total_steps"], "history": history}


def write_record(run_dir: str, config: dict[str, Any], history: list[dict[str, Any]],
                 trial: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the record atomically (temp file + rename locally, one PUT on object stores)."""
    doc = record_doc(config, history, trial)
    Store(run_dir).write_bytes(RECORD_FILE, json.dumps(doc, indent=1).encode())
    return doc


def read_record(run_dir: str) -> dict[str, Any] | None:
    """The run's record, or None when it has none (yet)."""
    text = Store(run_dir).read_text(RECORD_FILE)
    return None if text is None else json.loads(text)
