"""A real ``ray start --head`` of a test's own: its own temp dir (RAY_TMPDIR), its own free ports,
and a stop that ends only the processes it started (never ``ray stop``: that ends every Ray of
this user on the machine)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RAY = [sys.executable, "-m", "ray.scripts.scripts"]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: all ``n`` sockets are held open while the OS picks, so no two picks
    can be the same port (picking one at a time, a port closed a moment ago can come back)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


PORT_FLAGS = ("--port", "--dashboard-port", "--node-manager-port", "--object-manager-port", "--metrics-export-port",
              "--runtime-env-agent-port", "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port",
              "--ray-client-server-port")
PORT_CLASH = ("address already in use", "is used by other components", "failed to bind")


@dataclass
class Head:
    root: Path  # RAY_TMPDIR: Ray's temp dir is root/ray (sockets need a short path)
    env: dict[str, str]  # the environment the head was started with (and its clients use)
    port: int = 0  # set by start()
    dashboard_port: int = 0

    @property
    def temp_dir(self) -> Path:
        return self.root / "ray"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, *args: str, dashboard: bool = False) -> "Head":
        """``ray start --head`` on distinct free ports; started again on fresh ports (up to 3 tries) if
        another process took one of them between the pick and Ray's bind."""
        for attempt in range(3):
            ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
            self.port, self.dashboard_port = ports["--port"], ports["--dashboard-port"]
            cmd = [*RAY, "start", "--head", f"--temp-dir={self.temp_dir}", "--dashboard-host=127.0.0.1",
                   f"--include-dashboard={str(dashboard).lower()}", "--disable-usage-stats",
                   *[f"{k}={v}" for k, v in ports.items()], *args]
            out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
            if out.returncode == 0:
                return self
            text = (out.stdout + out.stderr).lower()
            lost_race = any(m in text for m in PORT_CLASH) and attempt < 2
            if not lost_race:
                break
            self.stop()  # whatever that try left running
        raise AssertionError(f"ray start failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")

    def processes(self) -> set[int]:
        """Every live process of this head: those naming its temp dir, and their descendants (Linux /proc)."""
        table = _process_table()
        mine = {pid for pid, (_, cmd) in table.items() if str(self.root) in cmd}
        while True:
            children = {pid for pid, (ppid, _) in table.items() if ppid in mine} - mine
            if not children:
                break
            mine |= children
        mine.discard(os.getpid())
        return mine

    def kill(self, sig: int = signal.SIGKILL) -> None:
        for pid in self.processes():
            _signal(pid, sig)

    def stop(self) -> None:
        """SIGTERM this head's processes, then SIGKILL what is left after 10 s."""
        pids = self.processes()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        for pid in pids | self.processes():
            _signal(pid, signal.SIGKILL)


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(name)] = (ppid, cmd)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def new_head(**env: str) -> Head:
    """A head not yet started, in a fresh short temp dir, with ``env`` over this process's."""
    root = Path(tempfile.mkdtemp(prefix="rh"))  # short: Ray's unix sockets live under it
    full = {**os.environ, "RAY_TMPDIR": str(root), **env}
    for key in ("RAY_ADDRESS",):
        full.pop(key, None)
    return Head(root, full)


def remove(head: Head) -> None:
    head.stop()
    time.sleep(0.5)
    shutil.rmtree(head.root, ignore_errors=True)
