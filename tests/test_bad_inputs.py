"""Bad inputs through the real CLIs (subprocesses): one clear line, non-zero exit, no traceback,
nothing half-written. And a corrupt latest checkpoint falls back to the previous one."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
DIGITS = ["--dataset", "digits", "--num-labeled", "20", "--batch-size", "8", "--mu", "2", "--depth", "10",
          "--width", "1", "--num-workers", "0", "--no-progress", "--seed", "1"]


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"fixmatch_ray.{module}", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def assert_one_line(res: subprocess.CompletedProcess, expect: str) -> None:
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], res.stderr


def sweep_doc(**changes) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(SMOKE))
    for k, v in changes.items():
        if k == "block":
            doc["grid"][0].update(v)
        else:
            doc[k] = v
    return doc


SWEEPS = [
    ("malformed YAML", "grid: [{num_labeled: [20]\n", "malformed YAML at line"),
    ("unknown key", sweep_doc(seedz=[1]), "unknown key 'seedz'"),
    ("wrong type", sweep_doc(block={"lr": "0.03x"}), "lr: expected float, got '0.03x'"),
    ("negative labels", sweep_doc(block={"num_labeled": [-20]}), "num_labeled: must be a positive"),
    ("labels above the training set", sweep_doc(block={"num_labeled": [2000]}), "must be 1..1433 (its training images), got 2000"),
    ("unknown dataset", sweep_doc(base={**SMOKE["base"], "dataset": "mnist"}), "dataset: unknown 'mnist'"),
    ("unknown arch", sweep_doc(block={"arch": "vit"}), "arch: unknown 'vit'"),
    ("batch vs workers", sweep_doc(resources={"workers": 3}), "not divisible by 3 DDP workers"),
    ("missing dataset offline", sweep_doc(base={**SMOKE["base"], "dataset": "cifar10", "download": False,
                                                "data_dir": "/nonexistent-data"}, block={"num_labeled": [40]}),
     "cifar-10-batches-py"),
    ("missing svhn offline", sweep_doc(base={**SMOKE["base"], "dataset": "svhn", "download": False,
                                             "data_dir": "/nonexistent-data"}, block={"num_labeled": [45]}),
     "train_32x32.mat"),
    ("stl10 seed outside its folds", sweep_doc(block={"dataset": "stl10", "num_labeled": [1000], "depth": 16},
                                               seeds=[1, 10]), "the seed must be 0..9, got 10"),
]


@pytest.mark.parametrize("what, doc, expect", SWEEPS, ids=[s[0] for s in SWEEPS])
def test_sweep_cli_bad_input(tmp_path, what, doc, expect):
    path = tmp_path / "bad.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    store = tmp_path / "store"
    assert_one_line(cli("sweep", str(path), "--storage", str(store)), expect)
    assert not store.exists() or not any(store.iterdir())  # nothing half-written


def test_sweep_unwritable_storage(tmp_path):
    (tmp_path / "f").write_text("")
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(SMOKE))
    assert_one_line(cli("sweep", str(path), "--storage", str(tmp_path / "f" / "x")), "storage: cannot write to")


@pytest.mark.ray
def test_sweep_impossible_resources(ray_session, tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(sweep_doc(resources={"workers": 2, "gpus_per_worker": 1})))
    res = cli("sweep", str(path), "--storage", str(tmp_path / "store"),
              "--address", ray_session.get_runtime_context().gcs_address)
    assert_one_line(res, "a trial needs 2 GPU")
    assert not (tmp_path / "store" / "smoke").exists()


def test_train_cli_bad_inputs(tmp_path):
    out = str(tmp_path / "run")
    assert_one_line(cli("train", *DIGITS, "--num-labeled", "-10", "--out", out), "num_labeled: must be a positive")
    assert_one_line(cli("train", *DIGITS, "--threshold", "1.5", "--out", out), "threshold: must be in [0, 1]")
    assert_one_line(cli("train", "--dataset", "cifar100", "--data-dir", str(tmp_path / "none"), "--no-download",
                        "--num-labeled", "400", "--out", out), "cifar-100-python")
    assert not Path(out).exists()
    assert_one_line(cli("train", "--resume", str(tmp_path / "nothing")), "does not exist")


def test_corrupt_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert cli("train", *DIGITS, "--total-steps", "8", "--eval-step", "4", "--out", str(out)).returncode == 0
    assert (out / "checkpoint.prev.pt").is_file()
    good = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(good[: len(good) // 3])  # truncated latest
    res = cli("train", "--resume", str(out), "--no-progress")
    assert res.returncode == 0 and "falling back to" in res.stderr, res.stderr
    import torch

    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 8 and [h["step"] for h in state["history"]] == [4, 8]
    # both copies corrupt: one line, exit 1
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (out / name).write_bytes(b"not a checkpoint")
    assert_one_line(cli("train", "--resume", str(out)), "no readable checkpoint in")


def test_report_cli_bad_input(tmp_path):
    assert_one_line(cli("report", str(tmp_path / "missing")), "does not exist")


UNREADABLE = [
    ("binary", bytes(range(256)) * 4, "binary data, not a YAML text file"),
    ("latin-1", "name: café\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 9); save the file as UTF-8"),
    ("UTF-16", "name: x\n".encode("utf-16"), "UTF-16 text; save the file as UTF-8"),
    ("directory", None, "is a directory; expected a YAML file"),
]


@pytest.mark.parametrize("what, data, expect", UNREADABLE, ids=[u[0] for u in UNREADABLE])
def test_sweep_file_not_utf8_text(tmp_path, what, data, expect):
    from fixmatch_ray.config import ConfigError, load_yaml

    path = tmp_path / "sweep.yaml"
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        load_yaml(path)
    assert str(path) in str(e.value) and expect in str(e.value)
    store = tmp_path / "store"
    assert_one_line(cli("sweep", str(path), "--storage", str(store)), expect)
    assert not store.exists()
