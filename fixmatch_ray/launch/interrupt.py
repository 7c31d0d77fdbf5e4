"""Honest exits for the sweep driver: SIGINT/SIGTERM stop the sweep cleanly and say so.

Ray Tune catches SIGINT itself and returns normally from ``Tuner.fit()``, which a script cannot
tell from success. Here the driver owns SIGINT and SIGTERM: the first one asks Tune to stop
gracefully (through the SIGUSR1 handler Tune installs during ``fit``, so Tune saves its
experiment state and stops the trials) and is remembered, so the sweep exits 128 + signal
(130 for Ctrl-C, 143 for SIGTERM). A second one stops at once.
"""
from __future__ import annotations

import os
import signal
import sys
from types import FrameType

TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"
HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Context manager: while inside, SIGINT/SIGTERM are recorded in ``signum``."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "Interrupts":
        os.environ[TUNE_SIGINT_ENV] = "1"  # Tune must not take SIGINT over during fit()
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def stop(self) -> None:
        """Stop the sweep from another thread (e.g. the lease was lost), as a SIGTERM would."""
        signal.raise_signal(signal.SIGTERM)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum
        name = signal.Signals(signum).name
        print(f"\n{name} received: stopping the trials (records and checkpoints stay consistent); "
              "send it again to stop at once", file=sys.stderr, flush=True)
        if not stop_tune():
            raise KeyboardInterrupt  # Tune is not running yet: nothing to stop gracefully


def stop_tune() -> bool:
    """Ask a running ``Tuner.fit`` to stop gracefully, as its own SIGINT handler would: Tune installs
    that handler on SIGUSR1 as well while it runs (undocumented; ``tests/launch/test_ray_internals.py``
    pins it). False when no handler is installed: Tune is not running."""
    if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.SIG_IGN, None):
        return False
    signal.raise_signal(signal.SIGUSR1)
    return True
