"""The experiment lease on a local path and on a real S3 API (moto's server, started by the test):
held/refused, takeover of a dead holder (a SIGKILLed process, an expired heartbeat), races, and
a heartbeat that finds its lease taken."""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fixmatch_ray.launch.lease import Holder, Lease, LeaseHeld
from fixmatch_ray.storage import Store

ROOT = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from fixmatch_ray.launch.lease import Lease
lease = Lease(sys.argv[1], heartbeat_s=0.2, stale_after_s=600)
lease.acquire()
print("held", flush=True)
time.sleep(600)
"""


def _ago(seconds: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _foreign(heartbeat_age_s: float, **changes) -> Holder:
    """A record written by a driver on another machine, whose last heartbeat is that old."""
    rec = Holder("elsewhere", 4242, "f" * 32, _ago(3600), _ago(heartbeat_age_s), "other-boot/pid:[1]", 7)
    return dataclasses.replace(rec, **changes)


def _wait(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_acquire_records_the_holder_and_release_removes_it(storage_root):
    store = Store(storage_root)
    with Lease(store, heartbeat_s=0.2, stale_after_s=5) as lease:
        assert lease.notice is None and not lease.lost
        rec = Holder.parse(store.read_bytes("lease.json"))
        assert rec == lease.record
        assert (rec.host, rec.pid) == (socket.gethostname(), os.getpid()) and len(rec.holder) == 32
        started = datetime.fromisoformat(rec.started)
        assert started.utcoffset() == timedelta(0) and abs(time.time() - started.timestamp()) < 5
        assert _wait(lambda: Holder.parse(store.read_bytes("lease.json")).heartbeat > rec.heartbeat)
        beat = Holder.parse(store.read_bytes("lease.json"))
        assert (beat.holder, beat.started) == (rec.holder, rec.started)  # only the heartbeat moves
    assert store.read_bytes("lease.json") is None and store.list() == []
    assert lease._thread is None


def test_second_driver_is_refused_with_one_line(storage_root):
    store = Store(storage_root)
    first = Lease(store, heartbeat_s=0.2, stale_after_s=5)
    first.acquire()
    try:
        before = store.read_bytes("lease.json")
        with pytest.raises(LeaseHeld) as e:
            Lease(store, heartbeat_s=0.2, stale_after_s=5).acquire()
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{storage_root} is in use by another driver")
        for part in (f"host {socket.gethostname()}", f"pid {os.getpid()}", f"since {first.record.started}",
                     "last heartbeat", "wait for it to finish or stop it", "after 5 s without a heartbeat"):
            assert part in msg, msg
        after = Holder.parse(store.read_bytes("lease.json"))
        assert after.holder == first.record.holder and after.started == Holder.parse(before).started
        assert not first.lost
    finally:
        first.release()


def test_takeover_after_the_holder_is_killed(storage_root):
    """A driver process on this host holds the lease and is SIGKILLed: the next one takes over
    at once (its pid is gone), although the dead holder's heartbeat is recent."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, storage_root], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld, match=f"pid {proc.pid},"):
            Lease(storage_root, heartbeat_s=0.2, stale_after_s=600).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    dead = Holder.parse(Store(storage_root).read_bytes("lease.json"))
    assert dead.pid == proc.pid and dead.heartbeat_age() < 60
    notices = []
    lease = Lease(storage_root, heartbeat_s=0.2, stale_after_s=600, notify=notices.append)
    notice = lease.acquire()
    try:
        assert notices == [notice] and "\n" not in notice
        assert notice.startswith(f"taking over the lease on {storage_root}: its previous driver (host ")
        assert f"pid {proc.pid}," in notice and notice.endswith(f"is gone (no process {proc.pid} on {dead.host})")
        assert Holder.parse(Store(storage_root).read_bytes("lease.json")).holder == lease.record.holder
    finally:
        lease.release()


def test_takeover_after_the_heartbeat_expires(storage_root):
    store = Store(storage_root)
    store.write_bytes("lease.json", _foreign(heartbeat_age_s=20).to_bytes())
    with pytest.raises(LeaseHeld, match="host elsewhere, pid 4242"):  # another host: its pid says nothing
        Lease(store, heartbeat_s=1, stale_after_s=30).acquire()
    lease = Lease(store, heartbeat_s=1, stale_after_s=10)
    notice = lease.acquire()
    try:
        assert "host elsewhere, pid 4242" in notice
        assert re.search(r"sent no heartbeat for 2\d s \(over 10 s\)$", notice), notice  # 20 s and a bit
        assert Holder.parse(store.read_bytes("lease.json")).holder == lease.record.holder
    finally:
        lease.release()
    assert store.read_bytes("lease.json") is None


def test_unreadable_lease_is_taken_over(storage_root):
    store = Store(storage_root)
    store.write_bytes("lease.json", b"\x00not json")
    with Lease(store, heartbeat_s=1, stale_after_s=10) as lease:
        assert lease.notice.endswith("its previous driver left an unreadable lease file")


def test_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    """A record naming this very process is a live holder; the same pid with another start time
    (the pid was reused after the holder died) is not."""
    me = Holder.this_process()
    store = Store(tmp_path)
    store.write_bytes("lease.json", dataclasses.replace(me, holder="a" * 32).to_bytes())
    with pytest.raises(LeaseHeld):
        Lease(store, heartbeat_s=1, stale_after_s=10).acquire()
    store.write_bytes("lease.json", dataclasses.replace(me, holder="a" * 32, pid_start=me.pid_start - 1).to_bytes())
    with Lease(store, heartbeat_s=1, stale_after_s=10) as lease:
        assert f"is gone (no process {os.getpid()} on" in lease.notice


def test_two_drivers_taking_over_one_stale_lease_one_wins(storage_root):
    store = Store(storage_root)
    for _ in range(5):
        store.write_bytes("lease.json", _foreign(heartbeat_age_s=100).to_bytes())
        leases = [Lease(store, heartbeat_s=1, stale_after_s=10) for _ in range(2)]
        barrier, outcome = threading.Barrier(2), [None, None]

        def take(i: int) -> None:
            barrier.wait()
            try:
                leases[i].acquire()
                outcome[i] = "won"
            except LeaseHeld:
                outcome[i] = "refused"

        threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcome) == ["refused", "won"], outcome
        winner = leases[outcome.index("won")]
        assert Holder.parse(store.read_bytes("lease.json")).holder == winner.record.holder
        winner.release()


def test_heartbeat_detects_a_lost_lease_and_never_overwrites_it(storage_root):
    store = Store(storage_root)
    lost = []
    lease = Lease(store, heartbeat_s=0.1, stale_after_s=1, on_lost=lost.append)
    lease.acquire()
    usurper = _foreign(heartbeat_age_s=0)
    # taken over while this driver looked away, the way a driver takes over: compare-and-swap (a
    # plain write could land between the heartbeat's own check and write, which no driver does)
    while not store.replace_if_unchanged("lease.json", usurper.to_bytes(), store.read_with_token("lease.json")[1]):
        pass
    assert _wait(lambda: lease.lost)
    assert len(lost) == 1 and "\n" not in lost[0]
    assert lost[0].startswith(f"lost the lease on {storage_root}: now held by another driver (host elsewhere, pid 4242")
    time.sleep(0.3)  # a few more heartbeat periods: the lost lease is left alone
    assert Holder.parse(store.read_bytes("lease.json")) == usurper and len(lost) == 1
    lease.release()
    assert Holder.parse(store.read_bytes("lease.json")) == usurper  # release never removes another's


def test_heartbeat_notices_a_deleted_lease(storage_root):
    store = Store(storage_root)
    lost = []
    with Lease(store, heartbeat_s=0.1, stale_after_s=1, on_lost=lost.append) as lease:
        store.delete("lease.json")
        assert _wait(lambda: lease.lost) and lost[0].endswith("its lease file is gone; stop touching this experiment")
    assert store.read_bytes("lease.json") is None


def test_timing_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"stale_after_s \(1\) must be at least twice heartbeat_s \(1\)"):
        Lease(Store(tmp_path), heartbeat_s=1, stale_after_s=1)


def test_peek_says_what_acquire_would_find_and_writes_nothing(storage_root):
    """The dry run's lease check: the rule and the message are acquire's own, and nothing is written
    (no lease, no lock file) whatever it finds."""
    store = Store(storage_root)
    assert Lease(store).peek() is None and not store.exists()  # not even the directory is made
    first = Lease(store, heartbeat_s=0.2, stale_after_s=5)
    first.acquire()
    try:
        with pytest.raises(LeaseHeld) as peeked:
            Lease(store, heartbeat_s=0.2, stale_after_s=5).peek()
        with pytest.raises(LeaseHeld) as acquired:
            Lease(store, heartbeat_s=0.2, stale_after_s=5).acquire()
        same = re.compile(r" \([0-9.]+ s ago\)")  # the heartbeat's age moves between the two calls
        assert same.sub("", str(peeked.value)) == same.sub("", str(acquired.value))
    finally:
        first.release()
    store.write_bytes("lease.json", _foreign(heartbeat_age_s=20).to_bytes())
    local = not storage_root.startswith("s3://")
    before = ({rel: store.read_bytes(rel) for rel in store.list()}, local and sorted(os.listdir(storage_root)))
    assert re.fullmatch(r"sent no heartbeat for 2\d s \(over 10 s\)", Lease(store, heartbeat_s=1, stale_after_s=10).peek())
    assert ({rel: store.read_bytes(rel) for rel in store.list()}, local and sorted(os.listdir(storage_root))) == before
