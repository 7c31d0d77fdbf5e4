"""deploy/kubernetes/rayjob.yaml against KubeRay's published RayJob schema (the CRD's OpenAPI schema
of KubeRay v1.7.0, tests/deploy/data/NOTICE), with no field the API server would silently drop,
and consistent with cluster.yaml, the lock and the image's Dockerfile: nothing here is hard-coded
that those files say. No Kubernetes cluster runs here: what the operator then does is not tested.
"""
from __future__ import annotations

import copy
import gzip
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from fixmatch_ray.config import load_sweep
from fixmatch_ray.launch.cluster import DRIVER_RESOURCE
from fixmatch_ray.launch.sweep import build_parser

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).parent / "data" / "kuberay-v1.7.0-rayjob.schema.json.gz"


def load(name: str):
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(gzip.decompress(SCHEMA.read_bytes()))


@pytest.fixture
def job() -> dict:
    return load("deploy/kubernetes/rayjob.yaml")


def dropped_fields(doc, schema: dict, path: str = "") -> list[str]:
    """Paths of ``doc``'s keys that the schema does not know: the API server prunes those without
    a word (a structural schema accepts unknown keys), so a misspelt field is silently ignored."""
    if isinstance(doc, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") or path == ".metadata":  # ObjectMeta: the server's own
            return []
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        out = []
        for key, value in doc.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            out += dropped_fields(value, sub, f"{path}.{key}") if sub is not None else [f"{path}.{key}"]
        return out
    if isinstance(doc, list) and "items" in schema:
        return [p for i, item in enumerate(doc) for p in dropped_fields(item, schema["items"], f"{path}[{i}]")]
    return []


def problems(doc: dict, schema: dict) -> list[str]:
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    return errors + [f"{p}: not in the schema (dropped)" for p in dropped_fields(doc, schema)]


def test_the_manifest_is_a_valid_rayjob(job, schema):
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert problems(job, schema) == []


def test_the_check_finds_a_wrong_type_and_a_misspelt_field(job, schema):
    bad = copy.deepcopy(job)
    bad["spec"]["backoffLimit"] = "2"
    bad["spec"]["shutdownAfterJobFinish"] = bad["spec"].pop("shutdownAfterJobFinishes")
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resource"] = {}
    assert sorted(problems(bad, schema)) == [
        ".spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].resource: not in the schema (dropped)",
        ".spec.shutdownAfterJobFinish: not in the schema (dropped)",
        "spec.backoffLimit: '2' is not of type 'integer'",
    ]


def pods(job: dict) -> dict[str, dict]:
    """Pod spec of the head, each worker group and the submitter."""
    cluster = job["spec"]["rayClusterSpec"]
    out = {"head": cluster["headGroupSpec"]["template"]["spec"],
           "submitter": job["spec"]["submitterPodTemplate"]["spec"]}
    out.update({g["groupName"]: g["template"]["spec"] for g in cluster["workerGroupSpecs"]})
    return out


def test_lifetime_and_retries(job):
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["submissionMode"] == "K8sJobMode"  # the mode whose submitter resubmits to a new head
    assert spec["submitterConfig"]["backoffLimit"] >= 1 and spec["backoffLimit"] >= 1


def test_same_ray_image_and_lock_as_cluster_yaml(job):
    cluster = load("cluster.yaml")
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert base == cluster["docker"]["image"]
    ray_pin = re.search(r"^ray==(\S+)", lock, re.M).group(1)
    assert base.split(":")[1].startswith(f"{ray_pin}-") and job["spec"]["rayClusterSpec"]["rayVersion"] == ray_pin
    (install,) = re.findall(r"^RUN (pip install .*)$", dockerfile, re.M)
    args = shlex.split(install)
    assert args[args.index("-c") + 1] == "requirements/lock.txt"  # torch, torchvision, Ray: the locked versions
    assert "s3" in args[-1].split("[")[1]  # boto3: experiment leases on s3://
    # where cluster.yaml installs from a package index of its own (a CUDA build of torch), so does the image
    index_opts = {"--index-url", "--extra-index-url", "-f", "--find-links", "-i"}
    for cmd in cluster["setup_commands"]:
        words = shlex.split(cmd)
        for i, w in enumerate(words[:-1]):
            if w in index_opts:
                assert words[i + 1] in args, f"cluster.yaml installs with {w} {words[i + 1]}; deploy/Dockerfile does not"
    images = {c["image"] for p in pods(job).values() for c in p["containers"]}
    tags = re.findall(r"docker build -f deploy/Dockerfile -t (\S+) \.", dockerfile)
    assert len(images) == 1 and tags == list(images), (images, tags)


def test_resources_match_cluster_yaml(job):
    cluster = load("cluster.yaml")
    types = cluster["available_node_types"]
    head, gpu = types[cluster["head_node_type"]], types["gpu_worker"]
    spec = job["spec"]["rayClusterSpec"]
    head_resources = {k: float(v) for k, v in spec["headGroupSpec"]["resources"].items()}
    assert head_resources == {k: float(v) for k, v in head["resources"].items()}
    assert head_resources[DRIVER_RESOURCE] > 0 and head_resources["CPU"] == 0
    assert json.loads(job["spec"]["entrypointResources"]) == {DRIVER_RESOURCE: 1}  # the sweep driver: on the head
    (group,) = spec["workerGroupSpecs"]
    assert {k: float(v) for k, v in group["resources"].items()} == {k: float(v) for k, v in gpu["resources"].items()}
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) == gpu["resources"]["GPU"] and int(limits["cpu"]) == gpu["resources"]["CPU"]
    assert (group["minReplicas"], group["maxReplicas"]) == (gpu["min_workers"], gpu["max_workers"])
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == 60 * cluster["idle_timeout_minutes"]
    selectors = {name: p["nodeSelector"]["karpenter.sh/capacity-type"] for name, p in pods(job).items()}
    assert selectors == {"head": "on-demand", "submitter": "on-demand", group["groupName"]: "spot"}


def test_environment_matches_cluster_yaml(job):
    cluster = load("cluster.yaml")
    auth = job["spec"]["rayClusterSpec"]["authOptions"]
    assert "--env=RAY_AUTH_MODE=token" in cluster["docker"]["run_options"] and auth["mode"] == "token"
    assert auth["secretName"]  # the token comes from a Secret, never from this file
    text = (ROOT / "deploy" / "kubernetes" / "rayjob.yaml").read_text()
    assert not re.search(r"[0-9a-f]{32,}", text)
    literal = [e["name"] for p in pods(job).values() for c in p["containers"] for e in c.get("env", [])
               if e["name"].startswith("RAY_AUTH")]
    assert literal == []  # the operator sets RAY_AUTH_MODE and RAY_AUTH_TOKEN (from the Secret) itself
    (shm,) = [o.split("=")[1] for o in cluster["docker"]["run_options"] if o.startswith("--shm-size=")]
    ray_pods = {k: p for k, p in pods(job).items() if k != "submitter"}
    for name, pod in ray_pods.items():
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("AWS_REGION") == cluster["provider"]["region"], name
        (dshm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
        assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": shm.upper().replace("G", "Gi")}, name
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"], name
    assert len({p["serviceAccountName"] for p in pods(job).values()}) == 1  # one identity with the bucket's access


def test_the_entrypoint_is_the_sweep_on_s3_that_fits_a_worker(job):
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "fixmatch_ray.sweep"]
    args = build_parser().parse_args(words[3:])
    assert args.storage.startswith("s3://")
    spec = job["spec"]["rayClusterSpec"]
    (group,) = spec["workerGroupSpecs"]
    assert args.autoscaling == (spec["enableInTreeAutoscaling"] and group["minReplicas"] == 0)
    r = load_sweep(ROOT / args.sweep_file).resources
    assert r.cpus_per_worker <= float(group["resources"]["CPU"]) and r.gpus_per_worker <= float(group["resources"]["GPU"])
