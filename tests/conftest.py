"""Shared test helpers: tiny CIFAR-format datasets written in torchvision's on-disk layout."""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

CIFAR_LAYOUT = {
    # name: (folder, train files, test file, meta file, meta key, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "batches.meta", "label_names", "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_label_names", "fine_labels", 100),
}


def class_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """32x32 RGB images whose colour and a bright stripe depend on the class: learnable."""
    n = len(labels)
    imgs = rng.integers(0, 60, size=(n, 32, 32, 3)).astype(np.uint8)
    for i, c in enumerate(labels):
        imgs[i, :, :, c % 3] += np.uint8(80 + 15 * (c % 7))
        row = (c * 3) % 28
        imgs[i, row:row + 4, :, :] = 250
    return imgs


def write_cifar(root: Path, name: str = "cifar10", train_per_class: int = 20, test_per_class: int = 5,
                seed: int = 0) -> Path:
    """Write a small dataset torchvision's CIFAR10/CIFAR100 classes can read from ``root``."""
    folder, train_files, test_file, meta_file, meta_key, label_key, k = CIFAR_LAYOUT[name]
    rng = np.random.default_rng(seed)
    d = Path(root) / folder
    d.mkdir(parents=True, exist_ok=True)

    def dump(fname: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.repeat(np.arange(k), per_class))
        imgs = class_images(labels, rng)
        return imgs, labels

    tr_imgs, tr_labels = dump("train", train_per_class)
    chunks = np.array_split(np.arange(len(tr_labels)), len(train_files))
    for fname, idx in zip(train_files, chunks):
        entry = {"data": tr_imgs[idx].transpose(0, 3, 1, 2).reshape(len(idx), -1),
                 label_key: tr_labels[idx].tolist()}
        with open(d / fname, "wb") as f:
            pickle.dump(entry, f)
    te_imgs, te_labels = dump("test", test_per_class)
    with open(d / test_file, "wb") as f:
        pickle.dump({"data": te_imgs.transpose(0, 3, 1, 2).reshape(len(te_labels), -1),
                     label_key: te_labels.tolist()}, f)
    with open(d / meta_file, "wb") as f:
        pickle.dump({meta_key: [f"class{i}" for i in range(k)]}, f)
    return Path(root)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("cifar10"), "cifar10", train_per_class=20, test_per_class=5)


# set in this process by an in-process sweep's quiet_output(); a later subprocess would inherit
# them (a --verbose sweep would then still log Ray Train at WARNING)
QUIET_ENV = ("FIXMATCH_RAY_TRAIN_LOG_LEVEL", "RAY_DEDUP_LOGS_SKIP_REGEX", "RAY_AIR_NEW_OUTPUT")


@pytest.fixture(autouse=True)
def _quiet_env_per_test():
    before = {k: os.environ.get(k) for k in QUIET_ENV}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _no_network_downloads(monkeypatch):
    # Tests never reach the internet: a download attempt must fail fast, not hang.
    monkeypatch.setenv("NO_PROXY", "*")
    yield


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory):
    """A directory where tests install plugin packages (``pip install --target``), on the import path
    of this process, of its subprocesses and of the session's Ray workers (it is on ``PYTHONPATH``
    before Ray starts), as a package installed into the environment would be."""
    site = tmp_path_factory.mktemp("plugin-site")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), *([before] if before else [])])
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="session")
def ray_cluster(plugin_site):
    """One local Ray for every test that needs it (start-up costs ~10-30 s here).

    A ``ray.cluster_utils.Cluster`` whose head has 4 logical CPUs, the machine's GPUs (Ray's
    ``Cluster`` would give it none: the GPU suite's Train runs would wait for a GPU forever) and
    the trial-driver resource, so fault tests can add and remove worker nodes (same machine, own
    raylets). Its workers import packages that tests install into ``plugin_site``.
    """
    import torch
    from ray.cluster_utils import Cluster

    from fixmatch_ray.launch.cluster import DRIVER_RESOURCE, ensure_ray

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "num_gpus": torch.cuda.device_count(), "resources": {DRIVER_RESOURCE: 1000},
        "include_dashboard": True, "dashboard_host": "127.0.0.1"})
    ensure_ray(address=cluster.address)
    yield cluster
    import ray

    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def ray_session(ray_cluster):
    import ray

    yield ray


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 at a free port, with a bucket; stopped after the session."""
    from s3server import start_s3_server

    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """AWS clients (boto3, pyarrow) of this test reach the server through AWS_ENDPOINT_URL."""
    from s3server import s3_env as variables

    env, unset = variables(s3_server)
    for key in unset:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(params=["local", "s3"])
def storage_root(request, tmp_path) -> str:
    """An experiment root: a local directory, then a fresh s3:// prefix on the test's S3 server."""
    if request.param == "local":
        return str(tmp_path / "exp")
    return request.getfixturevalue("s3_env").uri()
