"""What a sweep's watcher knows: every trial's state and latest figures, and the sweep's ETA.

No Ray here: the driver turns Tune's events into calls (:mod:`fixmatch_ray.launch.live`), and the
views (:mod:`.view`) read it. Results are read by key, defensively: a record without test
accuracy or images/s shows a dash.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .eta import Eta

STATES = ("finished", "running", "pending", "failed", "retrying")
ACCURACY_KEYS = ("test_acc", "test/acc", "accuracy")
SPEED_KEYS = ("images_per_s",)


def first_number(result: Mapping[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


@dataclass
class TrialRow:
    name: str
    setting: str
    seed: int
    total: int
    key: str = ""  # what its speed is measured by (the model)
    state: str = "pending"
    step: int = 0
    acc: float | None = None
    images_per_s: float | None = None
    tries: int = 0  # starts seen (a retry starts it again)


class Board:
    """The sweep's trials in their order, and an :class:`~.eta.Eta` over them (``slots`` at once).
    Every method takes ``now``, seconds on the caller's clock."""

    def __init__(self, name: str, experiment: str, trials: list[TrialRow], slots: int, now: float):
        self.name, self.experiment, self.started_at = name, experiment, now
        self.rows = {t.name: t for t in trials}
        self.eta = Eta(slots)
        for t in trials:
            self.eta.add(t.name, t.total, t.step, t.key, finished=t.state == "finished")

    def start(self, name: str, now: float) -> None:
        row = self.rows[name]
        row.state, row.tries = "running", row.tries + 1
        self.eta.start(name, now)

    def result(self, name: str, result: Mapping[str, Any], now: float) -> bool:
        """An evaluation's result; False when it says nothing new (a step already seen)."""
        row, step = self.rows[name], result.get("step")
        if not isinstance(step, int) or (step <= row.step and row.acc is not None):
            return False
        if row.state != "running":
            self.start(name, now)
        row.step = step
        row.acc = first_number(result, ACCURACY_KEYS)
        row.images_per_s = first_number(result, SPEED_KEYS)
        self.eta.report(name, step, now)
        return True

    def finish(self, name: str, now: float) -> None:
        row = self.rows[name]
        row.state, row.step = "finished", row.total
        self.eta.finish(name, now)

    def fail(self, name: str) -> None:
        self.rows[name].state = "failed"
        self.eta.fail(name)

    def retry(self, name: str) -> None:
        self.rows[name].state = "retrying"
        self.eta.requeue(name)

    def restored(self, name: str, finished: bool, step: int) -> None:
        """What a resumed experiment had done before this driver: work done, not throughput."""
        row = self.rows[name]
        if row.state != "pending":
            return
        if finished:
            row.state, row.step = "finished", row.total
            self.eta.finish(name, self.started_at)
        elif step > row.step:
            row.step = step
            self.eta.resumed_at(name, step)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for row in self.rows.values():
            out[row.state] += 1
        return out

    def running(self) -> list[TrialRow]:
        return [r for r in self.rows.values() if r.state == "running"]

    def left(self, now: float) -> float | None:
        return self.eta.left(now)
