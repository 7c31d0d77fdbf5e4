"""One live driver per experiment: a lease file in the experiment's storage, kept by a heartbeat.

``lease.json`` names its holder: host, pid, a random holder id, when it started and its last
heartbeat (UTC, ISO 8601). A driver takes the lease before touching the experiment:

- no lease file: created atomically (create-if-absent), so of two drivers exactly one wins;
- a live holder: :class:`LeaseHeld`, one line naming it and what to do;
- a dead holder (same host and pid namespace and its process is gone, or no heartbeat for
  ``stale_after_s``): taken over by compare-and-swap on the version that was read, so of two
  drivers taking over, exactly one wins; the other then sees a live holder.

A background thread renews the heartbeat every ``heartbeat_s``, also by compare-and-swap: if it
finds the lease held by someone else (taken over while this process hung, or deleted), it does
not overwrite it but marks the lease lost (``lease.lost``, the ``on_lost`` callback).

The heartbeat age is judged against this machine's clock: the drivers' clocks must agree to
well within ``stale_after_s`` (NTP does). No Ray here.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Callable

from ..errors import UserError
from ..storage import Store
from ..storage.layout import LEASE_FILE
HEARTBEAT_S = 15.0
STALE_AFTER_S = 90.0


class LeaseHeld(UserError, RuntimeError):
    """Another driver holds the experiment: one line naming it and what to do."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def _secs(s: float) -> str:
    return f"{s:.1f} s" if abs(s) < 10 else f"{s:.0f} s"


@dataclass(frozen=True)
class Holder:
    """A lease record. ``pidns`` (boot id + pid namespace) and ``pid_start`` (the process's start
    time in clock ticks) make the dead-pid check safe across containers and pid reuse."""

    host: str
    pid: int
    holder: str
    started: str
    heartbeat: str
    pidns: str = ""
    pid_start: int | None = None

    @classmethod
    def this_process(cls) -> "Holder":
        now = _iso(_now())
        stat = _proc_stat(os.getpid())
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex, now, now, _pidns(),
                   stat[1] if stat else None)

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=1) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> "Holder | None":
        """The record, or None if it is not one (unreadable, from a foreign tool)."""
        try:
            doc = json.loads(data)
            return cls(**{k: doc[k] for k in ("host", "pid", "holder", "started", "heartbeat")},
                       pidns=doc.get("pidns", ""), pid_start=doc.get("pid_start"))
        except (ValueError, TypeError, KeyError):
            return None

    def heartbeat_age(self, now: datetime | None = None) -> float:
        try:
            beat = datetime.fromisoformat(self.heartbeat)
        except ValueError:
            return float("inf")
        return ((now or _now()) - beat).total_seconds()

    def describe(self) -> str:
        return (f"host {self.host}, pid {self.pid}, since {self.started}, last heartbeat {self.heartbeat} "
                f"({_secs(max(self.heartbeat_age(), 0))} ago)")


def _pidns() -> str:
    """This machine's boot id and this process's pid namespace ('' where /proc has neither)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{f.read().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks) of a process from /proc, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _process_gone(rec: Holder) -> bool:
    """True only when ``rec``'s process is certainly dead: same host and pid namespace, and no
    process with its pid and start time (a zombie counts as dead)."""
    if rec.host != socket.gethostname() or not rec.pidns or rec.pidns != _pidns():
        return False
    stat = _proc_stat(rec.pid)
    if stat is None:
        return not _pid_exists(rec.pid)
    state, start = stat
    return state in ("Z", "X") or (rec.pid_start is not None and start != rec.pid_start)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """The lease ``name`` in ``store``: ``acquire()``/``release()`` or ``with Lease(store):``.

    ``on_lost(message)`` runs in the heartbeat thread when another holder is found; ``notify``
    receives the one-line takeover notice (it is also returned by :meth:`acquire`).
    """

    def __init__(self, store: Store | str, name: str = LEASE_FILE, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S, on_lost: Callable[[str], None] | None = None,
                 notify: Callable[[str], None] | None = None):
        if not 0 < 2 * heartbeat_s <= stale_after_s:
            raise ValueError(f"lease: stale_after_s ({stale_after_s}) must be at least twice "
                             f"heartbeat_s ({heartbeat_s}) and both positive")
        self.store = store if isinstance(store, Store) else Store(store)
        self.name, self.heartbeat_s, self.stale_after_s = name, heartbeat_s, stale_after_s
        self.on_lost, self.notify = on_lost, notify
        self.record: Holder | None = None
        self.lost = False
        self.lost_message = ""
        self.notice: str | None = None
        self.last_error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def where(self) -> str:
        return self.store.uri(self.name)

    def current(self) -> Holder | None:
        """The lease's holder as stored now (None if there is none or it is unreadable)."""
        found = self.store.read_with_token(self.name)
        return None if found is None else Holder.parse(found[0])

    def _dead(self, rec: Holder | None) -> str | None:
        """Why the holder ``rec`` counts as dead, or None if it may be alive."""
        if rec is None:
            return "left an unreadable lease file"
        if _process_gone(rec):
            return f"is gone (no process {rec.pid} on {rec.host})"
        age = rec.heartbeat_age()
        if age > self.stale_after_s:
            return f"sent no heartbeat for {_secs(age)} (over {self.stale_after_s:g} s)"
        return None

    def peek(self) -> str | None:
        """What :meth:`acquire` would find, reading only (``sweep --dry-run``): None when the lease
        is free, why its holder counts as dead when it would be taken over, :class:`LeaseHeld`
        while a live driver holds it. Reads through pyarrow alone (no conditional-write backend)."""
        data = self.store.read_bytes(self.name)
        if data is None:
            return None
        rec = Holder.parse(data)
        reason = self._dead(rec)
        if reason is None:
            raise self._held(rec)
        return reason

    def _held(self, rec: Holder) -> LeaseHeld:
        return LeaseHeld(f"{self.store.uri()} is in use by another driver ({rec.describe()}); wait for it to "
                         f"finish or stop it: its lease is taken over once its process is gone (same host) "
                         f"or after {self.stale_after_s:g} s without a heartbeat")

    def acquire(self) -> str | None:
        """Take the lease; returns the takeover notice, or None if the lease was free.
        Raises :class:`LeaseHeld` while another driver holds it."""
        if self.record is not None:
            raise RuntimeError(f"lease {self.where} is already held by this object")
        for _ in range(8):  # each round either wins, raises, or saw the lease change under it
            mine = Holder.this_process()
            found = self.store.read_with_token(self.name)
            if found is None:
                if self.store.create_exclusive(self.name, mine.to_bytes()):
                    return self._won(mine, None)
                continue
            data, token = found
            rec = Holder.parse(data)
            reason = self._dead(rec)
            if reason is None:
                raise self._held(rec)
            if self.store.replace_if_unchanged(self.name, mine.to_bytes(), token):
                before = f" ({rec.describe()})" if rec else ""
                return self._won(mine, f"taking over the lease on {self.store.uri()}: "
                                       f"its previous driver{before} {reason}")
        raise LeaseHeld(f"{self.where}: the lease kept changing while taking it; another driver is "
                        "starting on this experiment")

    def _won(self, mine: Holder, notice: str | None) -> str | None:
        self.record, self.lost, self.notice = mine, False, notice
        if notice and self.notify:
            self.notify(notice)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat_loop, name="lease-heartbeat", daemon=True)
        self._thread.start()
        return notice

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except Exception as e:  # a storage blip: retry at the next beat; a takeover shows then
                self.last_error = e
            if self.lost:
                return

    def beat(self) -> bool:
        """Renew the heartbeat once (the thread calls this); False if the lease was lost."""
        for _ in range(3):
            found = self.store.read_with_token(self.name)
            rec = None if found is None else Holder.parse(found[0])
            if rec is None or self.record is None or rec.holder != self.record.holder:
                self._lose(rec)
                return False
            fresh = replace(rec, heartbeat=_iso(_now()))
            if self.store.replace_if_unchanged(self.name, fresh.to_bytes(), found[1]):
                self.record = fresh
                return True
        return True  # it kept changing yet stayed ours: try again at the next beat

    def _lose(self, rec: Holder | None) -> None:
        self.lost = True
        self._stop.set()
        now = f"now held by another driver ({rec.describe()})" if rec else "its lease file is gone"
        message = f"lost the lease on {self.store.uri()}: {now}; stop touching this experiment"
        self.lost_message = message
        if self.on_lost:
            self.on_lost(message)

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours (never someone else's)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        mine, self.record = self.record, None
        if mine is None or self.lost:
            return
        for _ in range(3):
            found = self.store.read_with_token(self.name)
            rec = None if found is None else Holder.parse(found[0])
            if rec is None or rec.holder != mine.holder:
                return
            if self.store.delete_if_unchanged(self.name, found[1]):
                return

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
