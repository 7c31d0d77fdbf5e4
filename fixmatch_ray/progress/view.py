"""Two views of a :class:`~.board.Board`: the live one a terminal redraws in place (a ``rich``
renderable), and plain lines for a log (a file, ``ray job logs``, CI), paced for a long sweep.
No Ray here, and no clock: every call is given ``now``.
"""
from __future__ import annotations

from typing import Callable

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .board import Board, TrialRow
from .eta import duration

SUMMARY_EVERY_S = 300.0  # plain view: a summary line this often (and at the start and the end)


def counts_text(board: Board) -> str:
    return ", ".join(f"{n} {state}" for state, n in board.counts().items())


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tensorboard_command(experiment: str) -> str:
    return f"tensorboard --logdir {experiment}"


def live_view(board: Board, now: float) -> Group:
    """The whole live view: the overall bar, the trial counts, elapsed time and ETA, one row per
    running trial, where the experiment is and how to watch it in TensorBoard. Every line is
    cropped (never wrapped) to the console's width."""
    eta, done, total = board.left(now), board.eta.steps_done, board.eta.steps_total
    head = Table.grid(padding=(0, 1))
    head.add_column(no_wrap=True)
    head.add_column(ratio=1)
    head.add_column(no_wrap=True)
    pct = 100 * done / total if total else 100.0
    head.add_row(Text(board.name, style="bold"), ProgressBar(total=max(total, 1), completed=done),
                 f"{done:,}/{total:,} steps {pct:3.0f}%")
    c = board.counts()
    lines = [head, _crop(f"trials  {c['finished']} finished · {c['running']} running · {c['pending']} pending · "
                         f"{c['failed']} failed · {c['retrying']} retrying"),
             _crop(f"time    elapsed {duration(now - board.started_at)} · ETA {duration(eta)}")]
    running = board.running()
    if running:
        lines.append(_trial_table(board, running, now))
    lines += [_crop(f"experiment   {board.experiment}", "dim"), _crop(f"tensorboard  {tensorboard_command(board.experiment)}", "dim")]
    return Group(*lines)


def _crop(text: str, style: str = "") -> Text:
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


COLUMNS = (("setting", "left"), ("seed", "right"), ("step", "right"), ("test acc", "right"), ("img/s", "right"),
           ("ETA", "right"))


class _TrialTable:
    """One row per running trial. The figures keep their full width; the setting, first, takes what
    is left of the line and is cut short with an ellipsis."""

    def __init__(self, cells: list[tuple[str, ...]]):
        self.cells = cells

    def __rich_console__(self, console, options):
        widths = [max(len(name), *(len(row[i]) for row in self.cells)) for i, (name, _) in enumerate(COLUMNS)]
        table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False, header_style="bold")
        for i, (name, justify) in enumerate(COLUMNS):
            room = options.max_width - sum(widths[1:]) - 2 * (len(COLUMNS) - 1) if i == 0 else widths[i]
            table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis", max_width=max(1, room))
        for row in self.cells:
            table.add_row(*row)
        yield table


def _trial_table(board: Board, rows: list[TrialRow], now: float) -> _TrialTable:
    return _TrialTable([(r.setting, str(r.seed), f"{r.step:,}/{r.total:,}", _fixed(r.acc, 2), _fixed(r.images_per_s, 0),
                         duration(board.eta.trial_left(r.name, now))) for r in rows])


def summary_line(board: Board, now: float) -> str:
    done, total = board.eta.steps_done, board.eta.steps_total
    pct = 100 * done / total if total else 100.0
    return (f"[sweep] {done:,}/{total:,} steps ({pct:.0f}%) | {counts_text(board)} | "
            f"elapsed {duration(now - board.started_at)} | ETA {duration(board.left(now))}")


def evaluation_line(row: TrialRow) -> str:
    return (f"[sweep] {row.setting} seed {row.seed}: step {row.step:,}/{row.total:,} | test acc {_fixed(row.acc, 2)} | "
            f"{_fixed(row.images_per_s, 0)} img/s")


class PlainLog:
    """Plain lines, paced for a log: one per evaluation and per trial that ends, fails or is
    retried, and a summary (steps, trials, elapsed, ETA) at the start, every
    :data:`SUMMARY_EVERY_S` and at the end."""

    def __init__(self, board: Board, write: Callable[[str], None], every_s: float = SUMMARY_EVERY_S):
        self.board, self.write, self.every_s = board, write, every_s
        self.last_summary: float | None = None

    def tick(self, now: float) -> None:
        if self.last_summary is None or now - self.last_summary >= self.every_s:
            self.summary(now)

    def summary(self, now: float) -> None:
        self.last_summary = now
        self.write(summary_line(self.board, now))

    def evaluated(self, name: str, now: float) -> None:
        self.write(evaluation_line(self.board.rows[name]))
        self.tick(now)

    def ended(self, name: str, how: str, now: float) -> None:
        row = self.board.rows[name]
        self.write(f"[sweep] {row.setting} seed {row.seed}: {how}")
        self.tick(now)
