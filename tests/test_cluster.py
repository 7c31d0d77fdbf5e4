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


def test_schema_catches_a_bad_key():
    import jsonschema
    import pytest
    from ray.autoscaler._private.commands import prepare_config
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["max_workerz"] = 3
    with pytest.raises(jsonschema.ValidationError, match="max_workerz"):
        validate_config(prepare_config(config))
