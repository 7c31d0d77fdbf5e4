"""cluster.yaml against Ray's own autoscaler schema, and the facts the README promises."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_valid_for_ray_up():
    from ray.autoscaler._private.commands import prepare_config
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    # what `ray up` does: fill the provider's defaults, then check against ray-schema.json
    validate_config(prepare_config(config))  # raises jsonschema.ValidationError on a violation
    assert config["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu"
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["fixmatch_driver"] > 0 and head["resources"]["CPU"] == 0
    assert "InstanceMarketOptions" not in head["node_config"]  # on demand
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert all("IamInstanceProfile" in t["node_config"] for t in config["available_node_types"].values())
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_every_key_is_commented():
    """Each key line of cluster.yaml has a comment on it or directly above it."""
    lines = (ROOT / "cluster.yaml").read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("-") or ":" not in s:
            continue
        key = s.split(":", 1)[0]
        if " " in key:
            continue
        prev = lines[i - 1].strip() if i else ""
        if not (prev.startswith("#") or "#" in line):
            missing.append(f"{i + 1}: {s}")
    assert not missing, missing


def test_every_node_uses_token_authentication():
    """RAY_AUTH_MODE=token in every container, the token copied from the launching machine's
    ~/.ray (where `ray get-auth-token --generate` writes it) to the container user's ~/.ray on
    every node, and no token in the file."""
    import re

    text = (ROOT / "cluster.yaml").read_text()
    config = yaml.safe_load(text)
    assert "--env=RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"]["/home/ray/.ray"] == "~/.ray"
    assert "head_docker" not in config and "worker_docker" not in config  # one container setup for all nodes
    assert all("docker" not in t for t in config["available_node_types"].values())
    assert not re.search(r"[0-9a-f]{32,}", text), "a token-like secret in cluster.yaml"
    assert "RAY_AUTH_TOKEN=" not in text


def test_recorded_cluster(tmp_path, monkeypatch, capsys):
    """Which cluster `ray start` recorded in Ray's temp dir ($RAY_TMPDIR/ray/ray_current_cluster):
    none, a live one (joined, one notice line), a dead one (one-line ClusterError)."""
    import socket

    import pytest

    from fixmatch_ray.launch.cluster import ClusterError, recorded_cluster

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert recorded_cluster() is None
    record = tmp_path / "ray" / "ray_current_cluster"
    record.parent.mkdir()
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        address = f"127.0.0.1:{live.getsockname()[1]}"
        record.write_text(address + "\n")
        assert recorded_cluster() == address
    notice = capsys.readouterr().err
    assert notice.count("\n") == 1 and f"joining the Ray cluster already running on this machine at {address}" in notice
    with pytest.raises(ClusterError) as e:  # the port is closed now: the recorded cluster is gone
        recorded_cluster()
    assert str(e.value) == (f"{record} records a Ray cluster at {address} that is not running (stopped uncleanly?); "
                            "clear it with `ray stop`, or pass --address to choose a cluster")
