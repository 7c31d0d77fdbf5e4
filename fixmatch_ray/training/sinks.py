"""Where a run's events go: pluggable sinks of the run loop (:func:`.loop.run_training`).

A sink sees the trainer when the run starts (fresh or restored), the running means every few
steps, each evaluation's record, and the end. Sinks marked ``chief_only`` exist on rank 0 only:
the run loop drops them elsewhere, the one place the rank is looked at.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..algorithms import metric_key
from ..progress.eta import Eta, duration
from ..tracking import Tracker
from .checkpoint import save_checkpoint
from .engine import Engine, run_finished, summarize
from .record import write_record


class Sink:
    chief_only = False

    def start(self, trainer: Engine) -> None:
        """Before the first step (``trainer.step`` > 0 when restored)."""

    def progress(self, step: int, means: dict[str, float]) -> None:
        """Every few steps: the epoch's running means of the algorithm's metrics."""

    def epoch(self, record: dict[str, Any], trainer: Engine) -> None:
        """After each evaluation, in the order the sinks were given."""

    def close(self) -> None:
        """The run ended, failed or was interrupted."""


def checkpoint_due(trainer: Engine) -> bool:
    """Whether this evaluation saves a checkpoint: every ``checkpoint_every`` evaluations, and the last."""
    return len(trainer.history) % trainer.cfg.checkpoint_every == 0 or run_finished(trainer.step, trainer.cfg.total_steps)


class CheckpointSink(Sink):
    """``<out>/checkpoint.pt`` every ``checkpoint_every`` evaluations (the one before kept as a fallback)."""

    chief_only = True

    def __init__(self, out: str | Path):
        self.out = out

    def epoch(self, record: dict[str, Any], trainer: Engine) -> None:
        if checkpoint_due(trainer):
            save_checkpoint(self.out, trainer.state_dict())


class RecordSink(Sink):
    """The run record (:mod:`.record`), rewritten whole at start and after each checkpoint (give it
    after the :class:`CheckpointSink`: the record never runs ahead of the checkpoint)."""

    chief_only = True

    def __init__(self, run_dir: str, trial: dict[str, Any] | None = None):
        self.run_dir, self.trial = run_dir, trial

    def start(self, trainer: Engine) -> None:
        write_record(self.run_dir, trainer.cfg.to_dict(), trainer.history, self.trial, trainer.precision)

    def epoch(self, record: dict[str, Any], trainer: Engine) -> None:
        if checkpoint_due(trainer):
            write_record(self.run_dir, trainer.cfg.to_dict(), trainer.history, self.trial, trainer.precision)


class TrackerSink(Sink):
    """A :class:`~fixmatch_ray.tracking.Tracker`: config at start (with ``params`` beside it, e.g. a
    sweep trial's setting), every record, the summary at the end. The tracker is made by ``make``
    when the run starts, so ranks without the sink never create one (an idle writer would leave an
    empty TensorBoard file beside rank 0's). The one path of every tracker, for every launcher."""

    chief_only = True

    def __init__(self, make: Callable[[], Tracker], params: dict[str, Any] | None = None):
        self.make, self.params, self.tracker, self.trainer = make, dict(params or {}), None, None

    def start(self, trainer: Engine) -> None:
        self.trainer, self.tracker = trainer, self.make()
        self.tracker.log_config({**trainer.cfg.to_dict(), **self.params})
        if trainer.history:  # resumed: a crash between saving the checkpoint and logging its own
            last = trainer.history[-1]  # evaluation lost that point; log it again (same step, same values)
            self.tracker.log_metrics(last, last["step"])

    def epoch(self, record: dict[str, Any], trainer: Engine) -> None:
        self.tracker.log_metrics(record, record["step"])

    def close(self) -> None:
        if self.tracker is None:
            return
        if run_finished(self.trainer.step, self.trainer.cfg.total_steps):
            self.tracker.log_summary(summarize(self.trainer.history))
        self.tracker.close()


def format_record(rec: dict[str, Any], total_steps: int) -> str:
    """One evaluation as a line, every number under its record name: the algorithm's metrics
    (``train_*``, whatever it names them), then the loop's."""
    train = " ".join(f"{k} {v:.4f}" for k, v in rec.items() if k.startswith("train_"))
    return (
        f"epoch {rec['epoch']} step {rec['step']}/{total_steps} | {train} | lr {rec['lr']:.5f} | "
        f"test_acc {rec['test_acc']:.2f} test_loss {rec['test_loss']:.4f} median20_acc {rec['median20_acc']:.2f} "
        f"best_acc {rec['best_acc']:.2f} | {rec['images_per_s']:.0f} img/s"
    )


BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{left}, {rate_fmt}{postfix}]"


def eta_bar(eta: Callable[[], str], **kwargs):
    """A tqdm bar whose time left is ``eta()`` (the sweep's ETA code) instead of tqdm's own."""
    from tqdm import tqdm

    class EtaBar(tqdm):
        @property
        def format_dict(self):
            return {**super().format_dict, "left": eta()}

    return EtaBar(bar_format=BAR_FORMAT, **kwargs)


class ProgressSink(Sink):
    """A tqdm bar on stderr, with the ETA of :mod:`fixmatch_ray.progress.eta`, and one line per
    evaluation."""

    chief_only = True
    RUN = "run"

    def __init__(self, enabled: bool = True, clock: Callable[[], float] = time.time):
        self.enabled, self.bar, self.clock, self.eta = enabled, None, clock, None

    def start(self, trainer: Engine) -> None:
        self.eta = Eta(slots=1)
        self.eta.add(self.RUN, trainer.cfg.total_steps, done_steps=trainer.step)  # restored steps: not throughput
        self.eta.start(self.RUN, self.clock())
        self.bar = eta_bar(lambda: duration(self.eta.left(self.clock())), total=trainer.cfg.total_steps,
                           initial=trainer.step, disable=not self.enabled, file=sys.stderr, dynamic_ncols=True,
                           unit="step")

    def progress(self, step: int, means: dict[str, float]) -> None:
        self.eta.report(self.RUN, step, self.clock())
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix({metric_key(k): f"{v:.3f}" for k, v in means.items()})

    def epoch(self, record: dict[str, Any], trainer: Engine) -> None:
        self.bar.write(format_record(record, trainer.cfg.total_steps), file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
