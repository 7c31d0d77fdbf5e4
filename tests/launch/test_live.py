"""The sweep's console while Tune runs (fixmatch_ray.launch.live, fixmatch_ray.progress.terminal):
a real smoke sweep under a pseudo-terminal (one live view, redrawn in place) and piped (paced
plain lines); the watch, the descriptor capture and the resize arithmetic without Ray."""
from __future__ import annotations

import fcntl
import io
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from rich.text import Text

from fixmatch_ray.config import load_sweep
from fixmatch_ray.launch.live import Watch, make_board
from fixmatch_ray.progress.terminal import ReflowingRender, captured
from fixmatch_ray.progress.view import PlainLog

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "sweeps" / "smoke.yaml"
QUICK = ROOT / "sweeps" / "quick.yaml"


def tune_trial(name: str, status: str = "PENDING", step: int | None = None) -> SimpleNamespace:
    """What the watch reads of a Tune trial."""
    return SimpleNamespace(config={"trial": {"name": name}}, status=status,
                           last_result={} if step is None else {"step": step})


def test_live_watch_counts_a_resumed_experiments_earlier_work_as_done_not_as_throughput():
    spec = load_sweep(str(QUICK), {"storage": "/data/results"})
    names = [t.name for t in spec.trials]
    now = [1000.0]
    lines: list[str] = []
    board = make_board(spec, 2, now[0])
    watch = Watch(board, PlainLog(board, lines.append), clock=lambda: now[0])
    watch.sync([tune_trial(names[0], "TERMINATED", 600), tune_trial(names[1], "PENDING", 300),
                *(tune_trial(n) for n in names[2:])])
    assert board.counts() == {"finished": 1, "running": 0, "pending": 11, "failed": 0, "retrying": 0}
    assert board.eta.steps_done == 900 and board.eta.steps_total == 12 * 600
    watch.event("start", tune_trial(names[1]))
    for i in range(1, 4):  # 20 steps per 8 s after a 30 s start-up
        now[0] = 1030.0 + 8 * (i - 1)
        watch.event("result", tune_trial(names[1]), {"step": 300 + 20 * i, "test_acc": 40.0 + i, "images_per_s": 600.0})
    watch.event("result", tune_trial(names[1]), {"step": 360, "test_acc": 43.0})  # a repeat: no new line
    assert board.eta.rate(board.rows[names[1]].key) == pytest.approx(20 / 8)
    assert board.eta.trial_left(names[1], now[0]) == pytest.approx(240 / 2.5)
    assert [line for line in lines if "seed" in line] == [
        f"[sweep] digits@20 seed 2: step {s}/600 | test acc {a:.2f} | 600 img/s" for s, a in ((320, 41), (340, 42), (360, 43))]
    watch.event("finish", tune_trial(names[1]))
    watch.event("retry", tune_trial(names[2]))
    watch.event("fail", tune_trial(names[3]))
    assert board.counts() == {"finished": 2, "running": 0, "pending": 8, "failed": 1, "retrying": 1}
    assert lines[-3:] == ["[sweep] digits@20 seed 2: finished", f"[sweep] {spec.trials[2].label} seed 1: stopped; "
                          "to be retried from its last checkpoint", f"[sweep] {spec.trials[3].label} seed 2: failed for good"]


def test_live_capture_takes_what_is_written_at_the_descriptors_even_by_a_child():
    got: list[str] = []
    with captured([1, 2], got.append):
        os.write(2, b"a C logger's line\n")
        print("print()ed", file=sys.__stdout__, flush=True)  # Python's own stdout (pytest swaps sys.stdout)
        subprocess.run(["sh", "-c", "echo from a child; printf 'no newline' >&2"], check=True)
    assert sorted(got) == sorted(["a C logger's line", "print()ed", "from a child", "no newline"])


def test_live_render_moves_up_by_the_rows_a_narrower_terminal_rewraps_it_into():
    console = Console(file=io.StringIO(), width=80, force_terminal=True)
    render = ReflowingRender(Text("x" * 80 + "\n" + "y" * 30 + "\n" + "z" * 50), console)
    console.print(render)
    assert render.rows() == 3
    console.size = (40, 25)  # 80 -> 2 rows, 30 -> 1, 50 -> 2
    assert render.rows() == 5
    up = "\x1b[1A"
    assert str(render.position_cursor().segment.text).count(up) == 4  # from the last row to the first
    assert str(render.restore_cursor().segment.text).count(up) == 5


def run_in_pty(cmd: list[str], env: dict, cols: int, rows: int, timeout: float) -> tuple[int, bytes]:
    """``cmd`` with a pseudo-terminal of ``cols`` x ``rows`` as stdin, stdout and stderr; its exit
    code and every byte it wrote to the terminal."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True)
    os.close(slave)
    out, deadline, ended = bytearray(), time.time() + timeout, None
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer is gone
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:  # Ray's processes may hold the terminal a while: stop reading
                ended = ended or time.time()
                if time.time() - ended > 3:
                    break
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"timed out after {timeout} s:\n{bytes(out[-3000:]).decode(errors='replace')}")
        return proc.wait(timeout=60), bytes(out)
    finally:
        os.close(master)


@pytest.fixture
def sweep_env(tmp_path):
    from rayhead import new_head, remove

    env = new_head()  # a temp dir of its own: the sweep starts its own local Ray, joins no other
    env.env["TERM"] = "xterm-256color"
    try:
        yield env.env
    finally:
        remove(env)


SWEEP = [sys.executable, "-m", "fixmatch_ray.sweep", str(SMOKE)]
VIEW_LINES = ("smoke ", "trials  ", "time    ", "setting ", "digits@20 ", "experiment   ", "tensorboard  ")


@pytest.mark.ray
@pytest.mark.slow
def test_live_view_on_a_terminal_is_one_view_redrawn_in_place(sweep_env, tmp_path):
    """The smoke sweep in a 120 x 40 pseudo-terminal, its bytes replayed by a terminal emulator
    (pyte): the screen holds the plan, then one live view (each of its lines once, nothing else
    between them), then the results table; the view was redrawn in place (cursor moved up)."""
    import pyte

    cols, rows = 120, 40
    code, raw = run_in_pty([*SWEEP, "--storage", str(tmp_path)], sweep_env, cols, rows, timeout=900)
    screen = pyte.Screen(cols, rows)
    pyte.ByteStream(screen).feed(raw)
    lines = [line.rstrip() for line in screen.display]
    text = "\n".join(lines)
    assert code == 0, text
    assert lines[0].startswith("starting smoke: 2 trials, up to 1 at once")
    plan = [i for i, line in enumerate(lines) if line.startswith("[plan] ")]
    top = next(i for i, line in enumerate(lines) if line.startswith("smoke "))
    bottom = next(i for i, line in enumerate(lines) if line.startswith("tensorboard  "))
    table = next(i for i, line in enumerate(lines) if line.startswith("| setting"))
    assert plan and max(plan) < top < bottom < table, text  # the plan above the view, the table below
    assert "24/24 steps 100%" in lines[top]  # 2 trials x 12 steps, all done
    assert lines[top + 1] == "trials  2 finished · 0 running · 0 pending · 0 failed · 0 retrying"
    assert lines[top + 2].startswith("time    elapsed ") and lines[top + 2].endswith("ETA 0s")
    assert lines[bottom] == f"tensorboard  tensorboard --logdir {tmp_path / 'smoke'}"
    assert all(line.startswith(VIEW_LINES) for line in lines[top:bottom + 1]), lines[top:bottom + 1]
    for head in ("smoke ", "trials  ", "time    ", "tensorboard  "):  # one view, not a log of views
        assert sum(line.startswith(head) for line in lines) == 1, text
    redraws = raw.count(b"\x1b[1A")  # rich's cursor-up before each frame
    assert redraws >= 10 * (bottom - top), redraws  # redrawn in place, many times
    assert all(len(line) <= cols for line in lines)


@pytest.mark.ray
@pytest.mark.slow
def test_live_view_piped_is_paced_plain_lines(sweep_env, tmp_path):
    """Piped (a log), the same sweep prints plain lines: the plan, a summary at the start and the
    end (one more every 5 minutes), one line per evaluation (2 trials x 3) and per trial that ends,
    the results table; no cursor movement."""
    start = time.time()
    out = subprocess.run([*SWEEP, "--storage", str(tmp_path)], env=sweep_env, cwd=ROOT, capture_output=True,
                         timeout=900)
    elapsed = time.time() - start
    assert out.returncode == 0, out.stderr[-3000:]
    assert b"\x1b[" not in out.stdout + out.stderr
    lines = [line for line in (out.stdout + out.stderr).decode().splitlines() if line.strip()]
    evals = [line for line in lines if re.fullmatch(r"\[sweep\] digits@20 seed [12]: step \d+/12 \| test acc [\d.]+ \| \d+ img/s", line)]
    assert [line.split(": step ")[1].split(" |")[0] for line in evals] == ["4/12", "8/12", "12/12"] * 2
    assert sum(line.endswith(": finished") for line in lines) == 2
    summaries = [line for line in lines if re.match(r"\[sweep\] \d+/24 steps \(", line)]
    assert 2 <= len(summaries) <= 2 + elapsed // 300
    assert summaries[0].startswith("[sweep] 0/24 steps (0%) | 0 finished, ")
    assert summaries[-1].startswith("[sweep] 24/24 steps (100%) | 2 finished, 0 running, 0 pending")
    plan = [line for line in lines if line.startswith(("starting smoke", "[plan] "))]
    table = [line for line in lines if line.startswith(("|", "### ", "With a validation split")) or "mean ± sample std" in line]
    assert len(lines) == len(plan) + len(evals) + 2 + len(summaries) + len(table), lines
