"""The sweep's console while Tune runs: one live view redrawn in place on a terminal, plain paced
lines anywhere else (:mod:`fixmatch_ray.progress.view`).

The driver opens a :func:`watch` around ``Tuner.fit()``; Tune's callback (``tuner.LiveProgress``,
stateless so the copy Tune pickles with the experiment works for the driver that resumes it)
hands each trial event to the open watch. On a terminal, while the view is live, everything else
written to the driver's stdout and stderr (Ray's forwarded worker lines, Ray's loggers, the C++
core worker's warnings, the interrupt notice) is caught at the file descriptors and printed above
the view, so nothing scribbles into it. No Ray here.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator, TextIO

from ..config import SweepSpec
from ..progress.board import Board, TrialRow
from ..progress.view import PlainLog, live_view
from .plan import images_per_step, model_key

REFRESH_PER_S = 2


def speed_key(run) -> str:
    """What a trial's speed is measured by: its model and images per step, and what a step does
    (algorithm, augmentation policy and backend, the unlabeled loss on or off): on the quick demo
    CTAugment's batched trials run 2x as fast as RandAugment's per-image ones."""
    does = [str(getattr(run, key, "")) for key in ("algorithm", "policy", "aug_backend")]
    supervised = ["supervised"] if getattr(run, "lambda_u", 1.0) == 0 else []
    return " ".join([model_key(run), f"x{images_per_step(run)}", *does, *supervised])


def make_board(spec: SweepSpec, slots: int, now: float) -> Board:
    rows = [TrialRow(t.name, t.label, t.seed, t.run.total_steps, speed_key(t.run)) for t in spec.trials]
    return Board(spec.name, spec.experiment_path(), rows, slots, now)


class Watch:
    """Turns Tune's trial events into the board and a view. Thread-safe: Tune's loop calls it,
    the live display's thread reads it."""

    def __init__(self, board: Board, log: PlainLog | None, clock: Callable[[], float] = time.time):
        self.board, self.log, self.clock = board, log, clock
        self.lock = threading.RLock()

    def event(self, kind: str, trial: Any, result: dict | None = None) -> None:
        name = trial.config["trial"]["name"]
        if name not in self.board.rows:
            return
        now = self.clock()
        with self.lock:
            if kind == "start":
                self.board.start(name, now)
            elif kind == "result":
                if self.board.result(name, result or {}, now) and self.log:
                    self.log.evaluated(name, now)
            elif kind == "finish":
                self.board.finish(name, now)
                self._ended(name, "finished", now)
            elif kind == "fail":
                self.board.fail(name)
                self._ended(name, "failed for good", now)
            elif kind == "retry":
                self.board.retry(name)
                self._ended(name, "stopped; to be retried from its last checkpoint", now)

    def _ended(self, name: str, how: str, now: float) -> None:
        if self.log:
            self.log.ended(name, how, now)

    def sync(self, trials: list) -> None:
        """Tune's trials as they stand: those of a resumed experiment that finished earlier, and
        the steps the others had done (work done, not throughput)."""
        with self.lock:
            for t in trials:
                name = t.config["trial"]["name"]
                if name in self.board.rows:
                    step = (t.last_result or {}).get("step", 0)
                    self.board.restored(name, t.status == "TERMINATED", step if isinstance(step, int) else 0)
            if self.log:
                self.log.tick(self.clock())

    def render(self):
        with self.lock:
            return live_view(self.board, self.clock())


_ACTIVE: Watch | None = None


def active() -> Watch | None:
    """The watch the driver has open, if any (Tune's callback reports to it)."""
    return _ACTIVE


def on_terminal(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("TERM", "") != "dumb"


@contextlib.contextmanager
def watch(spec: SweepSpec, slots: int, stream: TextIO | None = None) -> Iterator[Watch]:
    """The sweep's console while the block runs: live on a terminal, plain lines otherwise. The
    live view's last frame stays on screen when the block ends, however it ends."""
    global _ACTIVE
    stream = stream or sys.stdout
    board = make_board(spec, slots, time.time())
    if not on_terminal(stream):
        log = PlainLog(board, lambda line: print(line, file=stream, flush=True))
        _ACTIVE = Watch(board, log)  # its first summary comes with Tune's first step (a resume's state known)
        try:
            yield _ACTIVE
        finally:
            log.summary(time.time())
            _ACTIVE = None
        return
    from ..progress.terminal import live_display

    _ACTIVE = Watch(board, None)
    try:
        with live_display(_ACTIVE.render, stream, REFRESH_PER_S):
            yield _ACTIVE
    finally:
        _ACTIVE = None
