"""The project's own record of a run: its whole evaluation history, next to its checkpoints.

One JSON document (``metrics.json`` in the run's directory, a local path or a URI): the resolved
config (with every option of its algorithm), the precision its math ran in (and on which device),
the dataset (classes, size, normalisation), every evaluation's row (step, accuracies, the
algorithm's metrics as ``train_<name>``, lr, images/s, wall time),
the summary (median of the last 20 evaluations...) and whether the run finished. Results are read
from here, never from logs or Tune's files.

The guarantee, on any crash: **the record never holds an evaluation that no complete, persisted
checkpoint holds.** Rank 0 writes it whole and atomically only after the checkpoint of its last
evaluation is completely in storage: a local run right after ``checkpoint.pt`` is renamed into
place; a Ray Train run from the checkpoint's upload function, after the upload (synchronous or in
Ray's background upload thread, which runs one upload at a time, in report order). So the record
describes exactly the newest persisted checkpoint (``step`` is its step), or one before it while an
upload is in flight. A restarted run resumes from a checkpoint at most that new and rewrites the
record from the restored history first, so rows after the restored step are replaced, never
duplicated. With ``checkpoint_every: k`` the record moves every k evaluations (and at the end).
"""
from __future__ import annotations

import json
from typing import Any

from ..storage import Store
from ..storage.layout import RECORD_FILE
from .engine import run_finished, summarize


def record_doc(config: dict[str, Any], history: list[dict[str, Any]],
               trial: dict[str, Any] | None = None, precision: str | None = None) -> dict[str, Any]:
    """The record of a run with this config and evaluation history; ``trial`` says which sweep
    trial the run is (name, label, seed, setting), None for a single run; ``precision`` what its
    math ran in, on which device (:func:`.engine.precision_name`, e.g. ``fp32 (TF32 convolutions
    and matmuls) on cuda (NVIDIA H100 80GB HBM3)``, ``bf16 autocast on ...``, ``fp32 (CPU)``; a
    run resumed elsewhere adds what the steps before ran in)."""
    step = history[-1]["step"] if history else 0
    return {"config": config, "trial": trial, "precision": precision, "dataset": describe_dataset(config),
            "summary": summarize(history), "step": step, "finished": run_finished(step, config["total_steps"]),
            "history": history}


def describe_dataset(config: dict[str, Any]) -> dict[str, Any]:
    """The run's dataset as the record keeps it: classes (names where it has them), image size,
    the normalisation the network was trained with (a folder dataset's, computed from its
    training images), and a folder dataset's cache entry and image counts."""
    from ..data.datasets import run_spec

    return run_spec(config["dataset"], config["data_dir"], config.get("image_size")).describe()


def write_record(run_dir: str, config: dict[str, Any], history: list[dict[str, Any]],
                 trial: dict[str, Any] | None = None, precision: str | None = None) -> dict[str, Any]:
    """Write the record atomically (temp file + rename locally, one PUT on object stores)."""
    return save_record(run_dir, record_doc(config, history, trial, precision))


def save_record(run_dir: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Write a record made earlier by :func:`record_doc` (e.g. when its checkpoint is persisted)."""
    Store(run_dir).write_bytes(RECORD_FILE, json.dumps(doc, indent=1).encode())
    return doc


def read_record(run_dir: str) -> dict[str, Any] | None:
    """The run's record, or None when it has none (yet)."""
    text = Store(run_dir).read_text(RECORD_FILE)
    return None if text is None else json.loads(text)
