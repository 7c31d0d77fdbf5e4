"""The tracker interface: where a run's configuration, per-evaluation metrics and summary go.

A tracker receives the run's resolved config once, every evaluation's record (indexed by the
global optimisation step, so a resumed run continues its curves) and the final summary. Only
rank 0 of a run holds one (the run loop decides). Add a tracker: a subclass in its own module
of this package and its line in ``tracking.TRACKERS``.
"""
from __future__ import annotations

from typing import Any, Mapping


class Tracker:
    """Records one run; every method is optional."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The run's resolved config (once, when the run starts or resumes)."""

    def log_metrics(self, record: Mapping[str, Any], step: int) -> None:
        """One evaluation's record (the run loop's keys: test_acc, train_loss, mask_rate, ...)."""

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """The run's final numbers (median20_acc, best_acc, last_acc, evals)."""

    def close(self) -> None:
        """Flush and release; the run is over or interrupted."""


# Which record keys become which metric names (TensorBoard tags; other trackers use them too).
TAGS = {
    "train/loss": "train_loss",
    "train/loss_x": "train_loss_x",
    "train/loss_u": "train_loss_u",
    "train/mask": "mask_rate",
    "train/lr": "lr",
    "train/images_per_s": "images_per_s",
    "test/acc": "test_acc",
    "test/loss": "test_loss",
    "test/raw_acc": "raw_test_acc",
    "test/median20_acc": "median20_acc",
}


def record_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one eval-epoch record: the known tags, plus ``train/<name>`` for any other
    metric an algorithm reports as ``train_<name>`` (keys absent from the record are skipped)."""
    out = {tag: record[key] for tag, key in TAGS.items() if key in record}
    known = set(TAGS.values())
    for key, value in record.items():
        if key.startswith("train_") and key not in known and isinstance(value, (int, float)):
            out[f"train/{key[len('train_'):]}"] = value
    return out


# The run's final numbers (training.engine.summarize): the summary every tracker records at the end.
SUMMARY_KEYS = ("median20_acc", "best_acc", "last_acc", "evals")


def summary_of(result: Mapping[str, Any]) -> dict[str, float]:
    """The summary keys present in ``result`` (a summary, or a report that carries one)."""
    return {k: float(result[k]) for k in SUMMARY_KEYS if isinstance(result.get(k), (int, float))}


def metrics_of(record: Mapping[str, Any]) -> dict[str, float]:
    """One evaluation's scalars under their tracker names (:func:`record_scalars`), as floats."""
    return {tag: float(v) for tag, v in record_scalars(record).items() if isinstance(v, (int, float))}


def params_of(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as flat ``key: text`` pairs (nested mappings as ``outer.inner``) for MLflow params."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(params_of(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out
