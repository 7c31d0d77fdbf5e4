"""The cluster path with real processes: a ``ray start --head`` with token authentication that
takes the smoke sweep through Ray's own job client (and refuses a client without the token), a
sweep that joins such a cluster without its token, at an address where nothing listens or at
one that is no GCS (one line each, fast), and a machine that already runs Ray (a live recorded
cluster is joined; a dead one is one line).

Each head has its own temp dir (RAY_TMPDIR), its own ports and its own token, and only its own
processes are stopped. Run under ``flock /tmp/ray.lock`` like every test that starts Ray.
"""
from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rayhead import free_ports, new_head, remove

from fixmatch_ray import results

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]

# A job client in its own process, as on the submitting machine: its environment says whether it
# has the token. Prints one JSON line: {"error": ...} or the job's status and logs.
CLIENT = r"""
import json, sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
address, root, storage = sys.argv[1:4]
try:
    client = JobSubmissionClient(address)
    job = client.submit_job(
        entrypoint=f"python -m fixmatch_ray.sweep sweeps/smoke.yaml --storage {storage}",
        runtime_env={"working_dir": root, "excludes": ["/.git", "/results", "/data", "*.pt"]})
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.exit(0)
deadline = time.time() + 900
while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
    if time.time() > deadline:
        client.stop_job(job)
        break
    time.sleep(2)
print(json.dumps({"status": str(client.get_job_status(job)), "logs": client.get_job_logs(job)}))
"""


def client(head, env: dict[str, str], storage: Path) -> dict:
    home = head.root / "client-home"  # no ~/.ray/auth_token here: the token comes only from env
    home.mkdir(exist_ok=True)
    clean = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
    out = subprocess.run([sys.executable, "-c", CLIENT, head.dashboard, str(ROOT), str(storage)],
                         env={**clean, "HOME": str(home), **env}, capture_output=True, text=True, timeout=1000)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def token_head(tmp_path):
    token_file = tmp_path / "auth_token"
    token = secrets.token_hex(32)
    token_file.write_text(token)
    head = new_head(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    try:
        head.start("--num-cpus=3", '--resources={"fixmatch_driver": 10}', dashboard=True)
        yield head, token
    finally:
        remove(head)


def test_job_submission_with_token_auth(token_head, tmp_path):
    head, token = token_head
    storage = tmp_path / "store"
    refused = client(head, {}, storage)  # no token at all
    assert "Authentication required" in refused["error"] and "Missing authentication token" in refused["error"]
    wrong = client(head, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}, storage)
    assert "Authentication failed" in wrong["error"] and "Invalid authentication token" in wrong["error"]
    assert not storage.exists()  # neither reached the cluster

    done = client(head, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}, storage)
    assert done["status"] == "SUCCEEDED", done["logs"][-3000:]
    assert "starting smoke: 2 trials" in done["logs"] and "| digits@20 | 2 |" in done["logs"]
    table = results.summary(str(storage / "smoke"))
    assert table.setting.tolist() == ["digits@20"] and table.n.tolist() == [2]
    main_table = (storage / "smoke" / "results.md").read_text().split("\n### ")[0]  # before the other sections
    assert main_table.count("| digits@20 | 2 |") == 1


def sweep(env: dict[str, str] | None, storage: Path, *args: str) -> subprocess.CompletedProcess:
    """The smoke sweep's CLI on this machine, in ``env`` (None: this process's), as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fixmatch_ray.sweep", str(ROOT / "sweeps" / "smoke.yaml"),
                           "--storage", str(storage), *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


@pytest.fixture
def plain_head():
    head = new_head(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    try:
        yield head
    finally:
        remove(head)


def test_joins_a_live_local_cluster(plain_head, tmp_path):
    """`ray start --head --num-cpus=1` on this machine: the sweep joins it (a local start would
    have had >= 3 CPUs) and its resources bound the sweep, checked as for --address."""
    plain_head.start("--num-cpus=1")
    recorded = (plain_head.temp_dir / "ray_current_cluster").read_text().strip()
    assert recorded.endswith(f":{plain_head.port}")
    out = sweep(plain_head.env, tmp_path / "store")
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[0].startswith(f"joining the Ray cluster already running on this machine at {recorded}")
    assert lines[1] == ("error: resources: a trial needs 2.01 CPU (2 workers x 1 + 0.01 for the trial's driver) "
                        "but the cluster has 1; lower the request, or pass --autoscaling if nodes will be added")
    assert len(lines) == 2 and "Traceback" not in out.stderr and "num_cpus" not in out.stderr


def test_a_dead_recorded_cluster_is_one_line(plain_head, tmp_path):
    """The head killed uncleanly (SIGKILL: `ray stop` never ran), so Ray's temp dir still records it."""
    plain_head.start("--num-cpus=1")
    plain_head.kill()
    recorded = (plain_head.temp_dir / "ray_current_cluster").read_text().strip()
    out = sweep(plain_head.env, tmp_path / "store")
    assert out.returncode == 2
    err = out.stderr.strip()
    assert err == (f"error: {plain_head.temp_dir / 'ray_current_cluster'} records a Ray cluster at {recorded} "
                   "that is not running (stopped uncleanly?); clear it with `ray stop`, or pass --address to "
                   "choose a cluster"), err
    assert not (tmp_path / "store" / "smoke").exists()


def test_joining_without_the_token_is_one_line(plain_head, tmp_path):
    """The recorded head wants a token; the sweep's process has none (no RAY_AUTH_*, a HOME without
    ~/.ray/auth_token). ray.init alone would retry ~15 s, a warning a second, then a traceback."""
    plain_head.start("--num-cpus=1")
    recorded = (plain_head.temp_dir / "ray_current_cluster").read_text().strip()
    home = plain_head.root / "home"
    home.mkdir()
    env = {**{k: v for k, v in plain_head.env.items() if not k.startswith("RAY_AUTH")}, "HOME": str(home)}
    for token in (None, secrets.token_hex(32)):  # none at all, then one that is not the cluster's
        extra = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token} if token else {}
        out = sweep({**env, **extra}, tmp_path / "store")
        assert out.returncode == 2, out.stderr
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert lines[0].startswith(f"joining the Ray cluster already running on this machine at {recorded}")
        assert lines[1:] == [f"error: the Ray cluster at {recorded} requires token authentication and refused "
                             "this process's token (missing or not the cluster's); set RAY_AUTH_MODE=token and "
                             "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token"], out.stderr
    assert not (tmp_path / "store" / "smoke").exists()


def test_an_address_where_nothing_listens_is_one_line(tmp_path):
    """--address at a closed port: one line in seconds (ray.init would retry for minutes), exit 2, for
    the sweep and for a distributed training alike."""
    [port] = free_ports(1)
    out = sweep(None, tmp_path / "store", "--address", f"127.0.0.1:{port}")
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: no Ray cluster is listening at 127.0.0.1:{port}; check the address "
                                  "(host:port of the head's GCS, as `ray start --head` printed it) and that the "
                                  "head is up"), out.stderr
    assert not (tmp_path / "store" / "smoke").exists()
    train = subprocess.run([sys.executable, "-m", "fixmatch_ray.train", "--dataset", "digits", "--num-labeled", "20",
                            "--ddp-workers", "1", "--address", f"127.0.0.1:{port}", "--out", str(tmp_path / "run")],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert train.returncode == 2 and train.stderr.strip().splitlines() == [out.stderr.strip()], train.stderr


def test_an_address_that_is_not_a_gcs_is_one_line(tmp_path):
    """--address at a port that accepts connections but is no GCS (the dashboard's, say): one line
    in seconds (Ray's GCS client would wait 40 s a try, then ray.init retry for minutes)."""
    with socket.create_server(("127.0.0.1", 0)) as server:  # accepts TCP, never answers gRPC
        address = f"127.0.0.1:{server.getsockname()[1]}"
        out = sweep(None, tmp_path / "store", "--address", address)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: {address} is not a Ray head's GCS port (it accepts connections but not "
                                  "gRPC; the dashboard's port 8265 is for `ray job submit`); give host:port of the "
                                  "GCS, 6379 unless `ray start --head --port` chose another"), out.stderr
    assert not (tmp_path / "store" / "smoke").exists()
