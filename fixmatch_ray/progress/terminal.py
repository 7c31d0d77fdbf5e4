"""A live display that owns its terminal: ``rich``'s :class:`~rich.live.Live`, plus two things it
lacks for a long job on a shared terminal.

- Nothing else writes into the live region: while it is live, file descriptors 1 and 2 (when they
  are the terminal) are pipes, read line by line and printed above the view. That catches what
  ``Live(redirect_stdout=True)`` cannot: loggers holding the old ``sys.stderr``, C++ code writing
  to fd 2, anything a library prints at the descriptor.
- It survives a resize: before each redraw the cursor goes up by the rows the last frame takes
  at the terminal's current width (a terminal that narrows re-wraps long lines onto more rows;
  rich counts the lines it wrote).
"""
from __future__ import annotations

import codecs
import contextlib
import os
import sys
import threading
from typing import Callable, Iterator, TextIO

from rich.console import Console, ConsoleDimensions, RenderableType
from rich.control import Control
from rich.live import Live
from rich.live_render import LiveRender
from rich.segment import ControlType, Segment
from rich.text import Text


class TtyConsole(Console):
    """A console whose size is its own terminal's (rich asks fds 0-2, which are pipes here)."""

    def __init__(self, file: TextIO, **kwargs):
        super().__init__(file=file, **kwargs)
        self._tty = file.fileno()

    @property
    def size(self) -> ConsoleDimensions:
        try:
            width, height = os.get_terminal_size(self._tty)
        except OSError:
            width, height = 0, 0
        return ConsoleDimensions(width or 80, height or 25)


class ReflowingRender(LiveRender):
    """A live render that remembers each line's width, so the cursor finds the frame's top after
    the terminal re-wrapped it at a new width."""

    def __init__(self, renderable: RenderableType, console: Console, **kwargs):
        super().__init__(renderable, **kwargs)
        self.console, self.widths = console, []

    def __rich_console__(self, console, options):
        segments = list(super().__rich_console__(console, options))
        self.widths = [Segment.get_line_length(line) for line in Segment.split_lines(segments)]
        yield from segments

    def rows(self) -> int:
        """Terminal rows the last frame takes now."""
        width = max(1, self.console.width)
        return sum(max(1, -(-w // width)) for w in self.widths)

    def position_cursor(self) -> Control:
        if self._shape is None:
            return Control()
        up = ((ControlType.CURSOR_UP, 1), (ControlType.ERASE_IN_LINE, 2)) * (self.rows() - 1)
        return Control(ControlType.CARRIAGE_RETURN, (ControlType.ERASE_IN_LINE, 2), *up)

    def restore_cursor(self) -> Control:
        if self._shape is None:
            return Control()
        return Control(ControlType.CARRIAGE_RETURN, *((ControlType.CURSOR_UP, 1), (ControlType.ERASE_IN_LINE, 2)) * self.rows())


def _pump(fd: int, emit: Callable[[str], None]) -> None:
    """Read ``fd`` until EOF, calling ``emit`` with each line (without its newline)."""
    decoder, pending = codecs.getincrementaldecoder("utf-8")("replace"), ""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        pending += decoder.decode(chunk, final=not chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            try:
                emit(line)
            except Exception:  # a line lost beats a writer blocked on a full pipe
                pass
        if not chunk:
            break
    if pending:
        with contextlib.suppress(Exception):
            emit(pending)
    os.close(fd)


@contextlib.contextmanager
def captured(fds: list[int], emit: Callable[[str], None]) -> Iterator[None]:
    """While inside, whatever is written to ``fds`` reaches ``emit`` line by line instead."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved, pumps = {}, []
    for fd in fds:
        read, write = os.pipe()
        saved[fd] = os.dup(fd)
        os.dup2(write, fd)
        os.close(write)
        pumps.append(threading.Thread(target=_pump, args=(read, emit), name=f"fd{fd}-pump", daemon=True))
        pumps[-1].start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        for fd, old in saved.items():
            os.dup2(old, fd)  # the pipe's last write end closes (unless a child process inherited it)
            os.close(old)
        for pump in pumps:
            pump.join(timeout=2)


@contextlib.contextmanager
def live_display(render: Callable[[], RenderableType], stream: TextIO, refresh_per_s: float = 2) -> Iterator[Live]:
    """``render()``'s result redrawn in place on ``stream``'s terminal while the block runs, other
    output above it; its last frame stays when the block ends."""
    stream.flush()
    tty = os.fdopen(os.dup(stream.fileno()), "w", encoding="utf-8", errors="replace", buffering=1)
    console = TtyConsole(tty)
    live = Live(console=console, get_renderable=render, refresh_per_second=refresh_per_s,
                redirect_stdout=False, redirect_stderr=False, vertical_overflow="crop")
    live._live_render = ReflowingRender(live._live_render.renderable, console, vertical_overflow="crop")

    def above(line: str) -> None:
        with live._lock:  # the cursor move and the line written as one, between two frames
            console.print(Text.from_ansi(line), soft_wrap=True)

    term = os.fstat(stream.fileno())
    fds = [fd for fd in (1, 2) if _same_file(fd, term)]
    try:
        with captured(fds, above), live:
            yield live
    finally:
        tty.close()


def _same_file(fd: int, st: os.stat_result) -> bool:
    try:
        other = os.fstat(fd)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)
