"""How long a sweep, or one run, has left: from the throughput measured while it runs.

No Ray here: the sweep's driver feeds it Tune's events (:mod:`fixmatch_ray.launch.live`) and
``train`` its own progress (:class:`fixmatch_ray.training.sinks.ProgressSink`).

The model: a trial holds one of ``slots`` slots (trials at once) from its start until it ends.
While it holds one it advances at the slot's rate, measured as steps per second between two
consecutive reports of the same trial (evaluation and checkpoint time included, so they are
counted), smoothed over time (a ratio of exponentially decayed sums, :data:`HALF_LIFE_S`) and kept
per ``key`` (the model, when trials differ; a key not measured yet takes the rate of all keys).
Around the steps a trial costs a start-up (from its start to its first report, less the steps it
made) and a teardown (from its last report to its end), each the mean of the recent ones
measured. The remaining time is the makespan of the remaining work: the running trials finish
what they have left, the pending ones (in order) take the first free slot. Steps a trial had
already done when it started (a resumed sweep, a retried trial) are never throughput: only the
intervals between reports seen here are.
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

HALF_LIFE_S = 300.0  # an interval measured this long ago weighs half as much as one measured now
MIN_INTERVALS = 2  # intervals measured before there is an estimate ("estimating…" until then)
RECENT = 8  # start-ups and teardowns averaged
ESTIMATING = "estimating…"


@dataclass
class _Trial:
    key: str
    total: int
    step: int = 0  # the last step known (done before this session included)
    state: str = "pending"  # pending | running | done | failed
    started: float | None = None
    base: int = 0  # the step it started from
    last: float | None = None  # when it last reported since it started


@dataclass
class _Rate:
    steps: float = 0.0
    seconds: float = 0.0
    intervals: int = 0
    at: float | None = None  # when the sums were last decayed

    def add(self, steps: float, seconds: float, t: float) -> None:
        if self.at is not None:
            decay = 0.5 ** (max(0.0, t - self.at) / HALF_LIFE_S)
            self.steps, self.seconds = self.steps * decay, self.seconds * decay
        self.steps, self.seconds, self.intervals, self.at = self.steps + steps, self.seconds + seconds, self.intervals + 1, t

    @property
    def per_s(self) -> float | None:
        return self.steps / self.seconds if self.seconds > 0 and self.steps > 0 else None


@dataclass
class Eta:
    """The remaining time of a set of trials run ``slots`` at a time. Times are seconds on any one
    clock (the caller's); trials are named and kept in the order added (the order pending ones
    start in)."""

    slots: int
    trials: dict[str, _Trial] = field(default_factory=dict)
    rates: dict[str, _Rate] = field(default_factory=dict)
    pooled: _Rate = field(default_factory=_Rate)
    startups: deque = field(default_factory=lambda: deque(maxlen=RECENT))  # (seconds, steps, key)
    teardowns: deque = field(default_factory=lambda: deque(maxlen=RECENT))

    def add(self, name: str, total_steps: int, done_steps: int = 0, key: str = "", finished: bool = False) -> None:
        """A trial of the sweep, with the steps it had done before (not throughput)."""
        self.trials[name] = _Trial(key, total_steps, total_steps if finished else done_steps,
                                   "done" if finished else "pending")

    def resumed_at(self, name: str, step: int) -> None:
        """What a trial had done before this session (a restored experiment): work, not throughput."""
        t = self.trials[name]
        if t.state == "pending":
            t.step = max(t.step, step)

    def start(self, name: str, t: float) -> None:
        trial = self.trials[name]
        trial.state, trial.started, trial.base, trial.last = "running", t, trial.step, None

    def report(self, name: str, step: int, t: float) -> None:
        trial = self.trials[name]
        if trial.state != "running":
            self.start(name, t)
        if trial.last is None:  # the first report since it started: start-up, not throughput
            self.startups.append((t - trial.started, max(0, step - trial.base), trial.key))
        elif step > trial.step and t > trial.last:
            for rate in (self.rates.setdefault(trial.key, _Rate()), self.pooled):
                rate.add(step - trial.step, t - trial.last, t)
        trial.step, trial.last = max(trial.step, step), t

    def finish(self, name: str, t: float) -> None:
        trial = self.trials[name]
        if trial.state == "running" and trial.last is not None:
            self.teardowns.append(t - trial.last)
        trial.state, trial.step = "done", trial.total

    def fail(self, name: str) -> None:
        """Failed for good: its remaining work is dropped."""
        self.trials[name].state = "failed"

    def requeue(self, name: str) -> None:
        """Stopped and to run again (a retry): pending, from the last step it reported."""
        self.trials[name].state = "pending"

    @property
    def steps_done(self) -> int:
        return sum(t.step for t in self.trials.values())

    @property
    def steps_total(self) -> int:
        return sum(t.step if t.state == "failed" else t.total for t in self.trials.values())

    def rate(self, key: str) -> float | None:
        """Steps per second of one slot running a trial of ``key``."""
        own = self.rates.get(key)
        return (own.per_s if own is not None and own.per_s else None) or self.pooled.per_s

    def _overheads(self) -> tuple[float, float]:
        startup = [max(0.0, s - n / r) for s, n, key in self.startups if (r := self.rate(key))]
        return (sum(startup) / len(startup) if startup else 0.0,
                sum(self.teardowns) / len(self.teardowns) if self.teardowns else 0.0)

    def trial_left(self, name: str, now: float) -> float | None:
        """Seconds a running trial has left (None: no estimate yet)."""
        trial = self.trials[name]
        if trial.state in ("done", "failed"):
            return 0.0
        rate = self.rate(trial.key)
        if rate is None or self.pooled.intervals < MIN_INTERVALS:
            return None
        startup, teardown = self._overheads()
        if trial.state == "pending":
            return startup + (trial.total - trial.step) / rate + teardown
        anchor, step = (trial.last, trial.step) if trial.last is not None else (trial.started + startup, trial.base)
        return max(0.0, anchor + (trial.total - step) / rate - now) + teardown

    def left(self, now: float) -> float | None:
        """Seconds until every unfinished trial has ended; None until enough is measured
        (:data:`MIN_INTERVALS` intervals, and a start-up when trials are still to start); 0 when
        nothing is left."""
        running = [n for n, t in self.trials.items() if t.state == "running"]
        pending = [n for n, t in self.trials.items() if t.state == "pending"]
        if not running and not pending:
            return 0.0
        if self.pooled.intervals < MIN_INTERVALS or (pending and not self.startups):
            return None
        ends = [self.trial_left(n, now) for n in running]
        free = sorted(ends) + [0.0] * max(0, self.slots - len(ends))
        heapq.heapify(free)
        for n in pending:
            heapq.heapreplace(free, free[0] + self.trial_left(n, now))
        return max(free)


def duration(seconds: float | None) -> str:
    """``45s``, ``8m05s``, ``2h13m``, ``3d04h``; :data:`ESTIMATING` for None."""
    if seconds is None or not math.isfinite(seconds):
        return ESTIMATING
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
