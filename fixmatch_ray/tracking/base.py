"""The tracker interface: where a run's configuration, per-evaluation metrics and summary go.

A tracker receives the run's resolved config once, every evaluation's record (indexed by the
global optimisation step, so a resumed run continues its curves) and the final summary. Only
rank 0 of a run holds one (the run loop decides), for a single run, a ``train --ddp-workers`` run
and every sweep trial alike. A configurable tracker declares its options (``Options``, the block
``tracking: {<name>: {...}}`` and the ``train --tracking <name>`` flags), checks them before the
run starts (:meth:`Tracker.check`) and is built from them and the :class:`TrackedRun`. Add one: a
subclass in its own module of this package and its line in ``tracking.TRACKERS``, or in another
package, an entry point in the ``fixmatch_ray.trackers`` group.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from ..config.strict import Options


@dataclass(frozen=True)
class TrackedRun:
    """Which run a tracker records."""

    key: str  # the run's directory or URI: the same on a resume, a retried trial, a restarted sweep
    name: str  # the run's name (a sweep trial's name, e.g. digits@20.s1)
    group: str | None = None  # the sweep's name (None: a single run), e.g. MLflow's default experiment
    local_dir: str | None = None  # a local directory for a tracker's own files (None: none is local)


class Tracker:
    """Records one run; every method but the constructor is optional."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options, run: TrackedRun):
        self.options, self.run = options, run

    @classmethod
    def check(cls, options: Options) -> None:
        """Before the run starts (a sweep: before Ray starts): its package is installed and its
        settings are usable, else one :class:`~fixmatch_ray.errors.ConfigError` line."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The run's resolved config (once, when the run starts or resumes)."""

    def log_metrics(self, record: Mapping[str, Any], step: int) -> None:
        """One evaluation's record (the run loop's keys: test_acc, train_loss, train_mask, ...):
        log :func:`record_scalars` of it, each number under its record name."""

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """The run's final numbers (median20_acc, best_acc, last_acc, evals)."""

    def close(self) -> None:
        """Flush and release; the run is over or interrupted."""


# Keys of an evaluation's record that say where it is, not what was measured: not logged as metrics
# (``step`` is every metric's x axis).
BOOKKEEPING = ("step", "epoch", "wall_time", "samples_per_step", "world_size")


def record_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one eval-epoch record under their record names, the one name each number has
    everywhere (record, TensorBoard, MLflow, W&B, results): ``test_acc``, ``lr``, an algorithm's
    ``train_<metric>``... (:data:`BOOKKEEPING` keys left out); a list of numbers (the last
    evaluation's per-class accuracy) as one number per class, ``test_class_acc/<class id>``."""
    out = {}
    for k, v in record.items():
        if k in BOOKKEEPING:
            continue
        if _number(v):
            out[k] = v
        elif isinstance(v, list) and v and all(_number(x) for x in v):  # per class: test_class_acc/<i>
            out.update({f"{k}/{i}": x for i, x in enumerate(v)})
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# The run's final numbers (training.engine.summarize): the summary every tracker records at the end.
SUMMARY_KEYS = ("median20_acc", "best_acc", "last_acc", "evals", "test_at_best_val_acc", "best_val_acc")


def summary_of(result: Mapping[str, Any]) -> dict[str, float]:
    """The summary keys present in ``result`` (a summary, or a report that carries one)."""
    return {k: float(result[k]) for k in SUMMARY_KEYS if isinstance(result.get(k), (int, float))}


def metrics_of(record: Mapping[str, Any]) -> dict[str, float]:
    """One evaluation's scalars (:func:`record_scalars`), as floats."""
    return {k: float(v) for k, v in record_scalars(record).items()}


def params_of(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as flat ``key: text`` pairs (nested mappings as ``outer.inner``) for MLflow params."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(params_of(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out
