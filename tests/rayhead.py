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
from dataclasses import dataclass, field
from pathlib import Path

RAY = [sys.executable, "-m", "ray.scripts.scripts"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    root: Path  # RAY_TMPDIR: Ray's temp dir is root/ray (sockets need a short path)
    env: dict[str, str]  # the environment the head was started with (and its clients use)
    port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)

    @property
    def temp_dir(self) -> Path:
        return self.root / "ray"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, *args: str, dashboard: bool = False) -> "Head":
        ports = {"--port": self.port, "--dashboard-port": self.dashboard_port, "--node-manager-port": free_port(),
                 "--object-manager-port": free_port(), "--metrics-export-port": free_port(),
                 "--runtime-env-agent-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
                 "--dashboard-agent-listen-port": free_port(), "--ray-client-server-port": free_port()}
        base = free_port()
        cmd = [*RAY, "start", "--head", f"--temp-dir={self.temp_dir}", "--dashboard-host=127.0.0.1",
               f"--include-dashboard={str(dashboard).lower()}", f"--min-worker-port={base}",
               f"--max-worker-port={base + 200}", "--disable-usage-stats",
               *[f"{k}={v}" for k, v in ports.items()], *args]
        subprocess.run(cmd, env=self.env, check=True, capture_output=True, text=True, timeout=180)
        return self

    def processes(self):
        """Every live process of this head: those naming its temp dir, and their descendants."""
        import psutil

        mine = set()
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if p.pid != os.getpid() and str(self.root) in " ".join(p.info["cmdline"] or []):
                    mine.add(p)
                    mine.update(p.children(recursive=True))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return [p for p in mine if p.pid != os.getpid()]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        for p in self.processes():
            try:
                p.send_signal(sig)
            except Exception:
                pass

    def stop(self) -> None:
        """SIGTERM this head's processes, then SIGKILL what is left after 10 s."""
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)


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
