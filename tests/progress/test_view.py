"""The sweep's two views (fixmatch_ray.progress.view) on a recorded sweep, with a fake clock: the
live one at several terminal widths, and the plain one's pace."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from fixmatch_ray.progress.board import Board, TrialRow
from fixmatch_ray.progress.view import PlainLog, live_view

QUICK = json.loads((Path(__file__).parent / "timelines.json").read_text())["quick"]
EXPERIMENT = "/data/results/quick"


def board_at(t_end: float) -> Board:
    """The quick demo's board as it stood ``t_end`` s into the recorded sweep, each evaluation's
    result given as the recorded step with a made-up accuracy (the step / 10)."""
    rows = [TrialRow(t["name"], t["name"].rsplit(".s", 1)[0], int(t["name"].rsplit(".s", 1)[1]), t["total"], t["key"])
            for t in QUICK["trials"]]
    board = Board("quick", EXPERIMENT, rows, QUICK["slots"], 0.0)
    events = []
    for t in QUICK["trials"]:
        events.append((t["end"], 0, t["name"], None))  # a trial's end, then the next one's start
        events.append((t["start"], 1, t["name"], None))
        events += [(w, 2, t["name"], s) for s, w in t["evals"]]
    for when, kind, name, step in sorted(events, key=lambda e: e[:2]):
        if when > t_end:
            break
        if kind == 0:
            board.finish(name, when)
        elif kind == 1:
            board.start(name, when)
        else:
            board.result(name, {"step": step, "test_acc": step / 10, "images_per_s": 500.0}, when)
    return board


def screen(board: Board, now: float, width: int) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(live_view(board, now))
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [160, 80, 50])
def test_live_view_renders_a_recorded_sweep_within_the_width(width):
    t = QUICK["trials"][5]["evals"][5][1]  # the 6th trial's 6th evaluation: 4 finished, 2 running (CTAugment's)
    board = board_at(t)
    done = {tr["name"]: max([s for s, w in tr["evals"] if w <= t], default=0) for tr in QUICK["trials"]}
    for tr in QUICK["trials"]:
        if tr["end"] <= t:
            done[tr["name"]] = tr["total"]
    steps, total = sum(done.values()), sum(tr["total"] for tr in QUICK["trials"])
    lines = screen(board, t, width)
    assert all(len(line) <= width for line in lines), lines
    if width >= 80:
        assert f"{steps:,}/{total:,} steps" in lines[0]
        assert lines[1] == f"trials  4 finished · 2 running · {len(QUICK['trials']) - 6} pending · 0 failed · 0 retrying"
        assert lines[-1] == f"tensorboard  tensorboard --logdir {EXPERIMENT}"
    assert lines[2].startswith("time    elapsed ")
    assert "estimating" not in lines[2]  # 8 evaluations in: an ETA
    running = [tr for tr in QUICK["trials"] if tr["start"] <= t < tr["end"]]
    assert len(running) == 2
    rows = lines[4:4 + len(running)]  # under the table's header
    for row, tr in zip(rows, running):  # the figures whole; a setting too long for the line cut short
        assert f"{done[tr['name']]}/{tr['total']}" in row
        assert f"{done[tr['name']] / 10:.2f}" in row
        setting = tr["name"].rsplit(".s", 1)[0]
        assert row.startswith(setting) if width >= 80 else row.startswith(setting[:5]) and "…" in row.split()[0]


def test_live_view_before_any_result_says_estimating():
    board = board_at(0.5)
    lines = screen(board, 0.5, 120)
    assert "ETA estimating…" in lines[2]
    assert sum("0/600" in line for line in lines) == 2  # both started trials, no result yet


def test_plain_log_paces_its_summaries_with_a_fake_clock():
    """A line per evaluation, and a summary at the start, then at the first evaluation at least
    300 s after the last summary: the recorded sweep's evaluations fed in time order."""
    lines: list[str] = []
    board = board_at(-1)  # nothing started yet
    log = PlainLog(board, lines.append, every_s=300)
    log.summary(0.0)
    evals = sorted((w, tr["name"], s) for tr in QUICK["trials"] for s, w in tr["evals"])
    expected, last = [0.0], 0.0
    for w, name, step in evals:
        board.result(name, {"step": step, "test_acc": 50.0}, w)
        log.evaluated(name, w)
        if w - last >= 300:
            expected.append(w)
            last = w
    summaries = [line for line in lines if " steps (" in line]
    assert len(lines) == len(evals) + len(summaries)
    assert len(summaries) == len(expected) and len(expected) >= 5  # a ~40 min sweep: every 5 min, not every 15 s
    assert summaries[0].startswith("[sweep] 0/7,200 steps (0%) | 0 finished, 0 running, 12 pending")
    assert all(line.startswith("[sweep] ") for line in lines)
    assert lines[1] == "[sweep] digits@20 seed 1: step 20/600 | test acc 50.00 | - img/s"
