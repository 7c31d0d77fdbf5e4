"""The ETA (fixmatch_ray.progress.eta): hand-computed cases, then recorded sweeps replayed.

timelines.json holds, for finished sweeps run on this machine (make_timelines.py wrote it from
their experiments), each trial's start, its evaluations' (step, wall time) from its run record
and its end, with the sweep's trials at once."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixmatch_ray.progress.eta import ESTIMATING, Eta, duration

TIMELINES = json.loads((Path(__file__).parent / "timelines.json").read_text())


def test_eta_is_estimating_until_two_intervals_are_measured():
    eta = Eta(slots=1)
    eta.add("a", 100)
    eta.start("a", 0.0)
    eta.report("a", 10, 30.0)  # the first report: start-up, not throughput
    eta.report("a", 20, 40.0)
    assert eta.left(40.0) is None
    eta.report("a", 30, 50.0)  # 2 intervals of 10 steps in 10 s: 1 step/s
    assert eta.left(50.0) == pytest.approx(70.0)
    assert eta.left(55.0) == pytest.approx(65.0)  # it counts down between reports
    assert duration(None) == ESTIMATING


def test_eta_of_a_resumed_run_counts_only_the_work_left():
    """Steps done before the resume are no throughput: 300 of 600 restored, then 20 steps per 8 s."""
    eta = Eta(slots=1)
    eta.add("a", 600, done_steps=300)
    eta.start("a", 0.0)
    for i, t in enumerate((60.0, 68.0, 76.0), start=1):  # the first report 60 s in: start-up
        eta.report("a", 300 + 20 * i, t)
    # 2.5 steps/s on the 240 steps left: 96 s (counting the restored 300 steps as done in 76 s
    # would give 360 / 76 = 4.7 steps/s and 51 s)
    assert eta.left(76.0) == pytest.approx(240 / 2.5)
    assert (eta.steps_done, eta.steps_total) == (360, 600)
    # its start-up: 60 s to its first report, less the 20 steps it made then at 2.5 steps/s
    eta.add("b", 600)
    assert eta.trial_left("b", 76.0) == pytest.approx(60 - 20 / 2.5 + 600 / 2.5)


def test_eta_places_pending_trials_on_the_first_free_slot_with_their_start_up():
    """Two slots, three trials of 100 steps at 1 step/s a slot, 10 s of start-up each."""
    eta = Eta(slots=2)
    for name in "abc":
        eta.add(name, 100)
    eta.start("a", 0.0)
    eta.start("b", 0.0)
    for t in (10.0, 20.0, 30.0):  # first reports 10 s in, at step 0: all 10 s are start-up
        eta.report("a", int(t - 10), t)
        eta.report("b", int(t - 10), t)
    # at t=30 a and b have 80 steps left: 80 s; c starts on the first free slot: 10 + 100 s more
    assert eta.left(30.0) == pytest.approx(80 + 10 + 100)
    assert eta.trial_left("c", 30.0) == pytest.approx(110)
    eta.report("a", 100, 110.0)
    eta.report("b", 100, 110.0)
    eta.finish("a", 112.0)  # 2 s of teardown after its last report
    eta.start("c", 112.0)
    # b ends after its teardown (2 s); c: start-up 10 s, 100 s of steps, teardown 2 s
    assert eta.left(112.0) == pytest.approx(10 + 100 + 2)


def test_eta_keeps_a_rate_per_model_and_falls_back_to_all_models_rate():
    eta = Eta(slots=1)
    eta.add("small", 40, key="wrn-28-2")
    eta.add("big", 40, key="wrn-28-8")
    eta.add("big2", 40, key="wrn-28-8")
    eta.start("small", 0.0)
    for step, t in ((0, 5.0), (10, 10.0), (20, 15.0)):  # 2 steps/s
        eta.report("small", step, t)
    assert eta.rate("wrn-28-8") == pytest.approx(2.0)  # not measured yet: all models' rate
    eta.finish("small", 15.0)
    eta.start("big", 15.0)
    for step, t in ((0, 20.0), (10, 40.0), (20, 60.0)):  # 0.5 step/s
        eta.report("big", step, t)
    assert eta.rate("wrn-28-8") == pytest.approx(0.5)
    assert eta.rate("wrn-28-2") == pytest.approx(2.0)


def test_eta_follows_a_change_of_speed_within_minutes():
    """100 s at 1 step/s, then 600 s at 2 steps/s: a lifetime mean says 1.86 steps/s; the smoothed
    rate (half-life 5 min) has moved most of the way: the old 100 s weigh a quarter."""
    eta = Eta(slots=1)
    eta.add("a", 10_000)
    eta.start("a", 0.0)
    eta.report("a", 0, 0.0)
    for t in range(10, 101, 10):
        eta.report("a", t, float(t))
    for t in range(110, 701, 10):
        eta.report("a", 100 + 2 * (t - 100), float(t))
    assert (100 + 1200) / 700 == pytest.approx(1.857, abs=1e-3)
    assert 1.9 < eta.rate("") < 2.0


def test_eta_drops_the_work_of_a_trial_failed_for_good_and_keeps_a_retried_one():
    eta = Eta(slots=1)
    eta.add("a", 100)
    eta.add("b", 100)
    eta.start("a", 0.0)
    for step, t in ((10, 15.0), (20, 25.0), (30, 35.0)):  # 1 step/s; start-up 15 - 10 = 5 s
        eta.report("a", step, t)
    eta.requeue("a")  # to be retried from step 30: 5 + 70 s, then b: 5 + 100 s
    assert eta.trial_left("a", 35.0) == pytest.approx(75)
    assert eta.left(35.0) == pytest.approx(75 + 105)
    eta.fail("a")
    assert eta.left(35.0) == pytest.approx(105)
    assert (eta.steps_done, eta.steps_total) == (30, 130)  # its 30 steps stay done, the 70 left are dropped


def test_duration_formats():
    assert [duration(s) for s in (0, 59.4, 61, 3599, 3600 * 2 + 13 * 60, 86400 * 3 + 3600 * 4)] == \
        ["0s", "59s", "1m01s", "59m59s", "2h13m", "3d04h"]


def replay(timeline: dict) -> list[tuple[float, float | None, float, float]]:
    """Each event of a recorded sweep fed to an Eta, in time order: (time, ETA, true time left,
    fraction of the steps done) after each."""
    eta = Eta(slots=timeline["slots"])
    events = []
    for tr in timeline["trials"]:
        eta.add(tr["name"], tr["total"], tr.get("done", 0), tr.get("key", ""))
        # at one instant, as Tune calls them: a trial's end, then the next one's start, then reports
        events.append((tr["end"], 0, "end", tr["name"], None))
        events.append((tr["start"], 1, "start", tr["name"], None))
        events += [(t, 2, "report", tr["name"], step) for step, t in tr["evals"]]
    end = max(tr["end"] for tr in timeline["trials"])
    out = []
    for t, _, kind, name, step in sorted(events, key=lambda e: e[:2]):
        if kind == "start":
            eta.start(name, t)
        elif kind == "report":
            eta.report(name, step, t)
        else:
            eta.finish(name, t)
        out.append((t, eta.left(t), end - t, eta.steps_done / eta.steps_total))
    return out


def throughput_change(timeline: dict, t: float) -> float:
    """How much faster the slots ran after ``t`` than before: steps per second between consecutive
    evaluations after ``t`` over those before (this machine is shared: its load moves)."""
    before, after = [0, 0.0], [0, 0.0]
    for tr in timeline["trials"]:
        for (s1, w1), (s2, w2) in zip(tr["evals"], tr["evals"][1:]):
            side = before if w2 <= t else after
            side[0] += s2 - s1
            side[1] += w2 - w1
    return (after[0] / after[1]) / (before[0] / before[1])


def eta_figures(timeline: dict) -> dict[str, float]:
    """The ETA once 25 % of the steps are done: its relative error, the throughput change after
    that point and the error of the ETA scaled by that change; the largest ratio between an ETA and
    the one before it counted down to its time, while either is at least a minute."""
    points = [p for p in replay(timeline) if p[1] is not None]
    t, eta, left, _ = next(p for p in points if p[3] >= 0.25)
    change = throughput_change(timeline, t)
    # a jump: the new ETA against the last one counted down to now (the view counts down between updates)
    jumps = [max(a - (tb - ta), b) / max(min(a - (tb - ta), b), 1e-9)
             for (ta, a, *_), (tb, b, *_) in zip(points, points[1:]) if max(a - (tb - ta), b) >= 60]
    return {"error": abs(eta - left) / left, "change": change, "scaled_error": abs(eta / change - left) / left,
            "jump": max(jumps)}


STEADY = 0.2  # throughput within 20 % before and after the 25 % point


@pytest.mark.parametrize("name", sorted(TIMELINES))
def test_eta_on_recorded_sweeps(name):
    """A finished sweep's records replayed: the ETA never moves by more than 2x from one update to
    the next; once 25 % of the work is done it is within 20 % of the time the sweep really had left
    where the machine's throughput held; where it did not (this machine is shared, and no ETA from
    measured throughput can foresee a change of load), within 20 % once scaled by that change."""
    f = eta_figures(TIMELINES[name])
    print(f"{name}: ETA error at 25 % of the work {100 * f['error']:.1f} %, throughput after/before "
          f"{f['change']:.2f}, error scaled by it {100 * f['scaled_error']:.1f} %, largest jump {f['jump']:.2f}x")
    assert f["jump"] <= 2.0
    steady = abs(f["change"] - 1) <= STEADY
    assert (f["error"] if steady else f["scaled_error"]) <= 0.20


def test_eta_recorded_sweeps_cover_two_concurrencies_with_steady_throughput():
    steady = {TIMELINES[n]["slots"] for n in TIMELINES if abs(eta_figures(TIMELINES[n])["change"] - 1) <= STEADY}
    assert len(steady) >= 2, steady
