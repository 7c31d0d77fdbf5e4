"""A real single-node SLURM cluster of a test's own: Debian's ``slurm-wlm`` (slurmctld, slurmd) and
``munge``, with every file (key, sockets, config, state, spool, logs) in a fresh temporary
directory, ports of its own, CPU only, and a stop that ends only the daemons it started.

``slurmd`` runs jobs as their submitter, so it must run as root; without the binaries, or not as
root, :func:`unavailable` says why in one line (the tests skip with it).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rayhead import free_ports

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")


def unavailable() -> str | None:
    """Why a local SLURM cannot run here (one line), or None."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"no local SLURM: {', '.join(missing)} not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "no local SLURM: slurmd must run as root to start jobs"
    return None


CONF = """\
ClusterName=fmtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/run/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait={kill_wait}
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=local Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    root: Path  # everything of this cluster: key, sockets, config, state, spool, logs
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """This process's environment with the cluster's config: what its client commands need."""
        return {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf")}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job``'s fields of a job (JobState, ExitCode, Restarts, ...)."""
        text = self.run("scontrol", "show", "job", "-o", str(job_id))
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def submit(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> int:
        out = subprocess.run(["sbatch", "--parsable", *args], env={**self.env, **(env or {})}, cwd=cwd,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.strip().split(";")[0])

    def wait(self, job_id: int, states: set[str], timeout: float, what: str = "") -> dict[str, str]:
        """The job's fields once its state is one of ``states`` (bounded: AssertionError after
        ``timeout`` s)."""
        deadline = time.time() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            if time.time() > deadline:
                raise AssertionError(f"job {job_id} not {'/'.join(sorted(states))} after {timeout:g} s "
                                     f"{what}: {info.get('JobState')} ({info.get('Reason')})")
            time.sleep(1)

    def stop(self) -> None:
        """Cancel this cluster's jobs (bounded wait for them to end), then end the daemons it
        started (SIGTERM, SIGKILL after 10 s)."""
        if any(p.poll() is None for p in self.procs):
            jobs = self.run("squeue", "-h", "-o", "%i", check=False).split()
            if jobs:
                self.run("scancel", *jobs, check=False)
                deadline = time.time() + 60
                while self.run("squeue", "-h", "-o", "%i", check=False).split() and time.time() < deadline:
                    time.sleep(1)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def _daemon(cluster: Slurm, *cmd: str) -> None:
    log = open(cluster.root / "log" / f"{Path(cmd[0]).name}.out", "w")
    cluster.procs.append(subprocess.Popen(cmd, env=cluster.env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))


def start(cpus: int = 2, kill_wait: int = 30, timeout: float = 60) -> Slurm:
    """munged, slurmctld and slurmd of a new cluster in a fresh temporary directory, their node idle."""
    root = Path(tempfile.mkdtemp(prefix="slurm"))
    root.chmod(0o755)  # munged insists that its socket's directories be reachable by everyone
    for d in ("munge", "run", "state", "spool", "log"):
        (root / d).mkdir()
    (root / "munge").chmod(0o700)
    (root / "run").chmod(0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    ctld_port, d_port = free_ports(2)
    host = socket.gethostname()
    (root / "slurm.conf").write_text(CONF.format(host=host, root=root, ctld_port=ctld_port, d_port=d_port,
                                                 cpus=cpus, kill_wait=kill_wait))
    cluster = Slurm(root)
    try:
        _daemon(cluster, "munged", "--foreground", f"--key-file={key}", f"--socket={root}/run/munge.sock",
                f"--pid-file={root}/run/munged.pid", f"--log-file={root}/log/munged.log",
                f"--seed-file={root}/munge/seed")
        _wait_for(lambda: (root / "run" / "munge.sock").exists(), timeout, "munged's socket", cluster)
        _daemon(cluster, "slurmctld", "-D", "-f", str(root / "slurm.conf"))
        _wait_for(lambda: _listening(ctld_port), timeout, "slurmctld", cluster)
        _daemon(cluster, "slurmd", "-D", "-f", str(root / "slurm.conf"), "-N", host)
        _wait_for(lambda: cluster.run("sinfo", "-h", "-o", "%t", check=False).strip() == "idle", timeout,
                  "the node to be idle", cluster)
    except BaseException:
        remove(cluster)
        raise
    return cluster


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _wait_for(pred, timeout: float, what: str, cluster: Slurm) -> None:
    deadline = time.time() + timeout
    while not pred():
        dead = [p.args[0] for p in cluster.procs if p.poll() is not None]
        if dead or time.time() > deadline:
            logs = "\n".join(f"--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted((cluster.root / "log").iterdir()))
            raise AssertionError(f"local SLURM: no {what} after {timeout:g} s ({', '.join(dead)} exited)\n{logs}")
        time.sleep(0.5)


def remove(cluster: Slurm) -> None:
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)
