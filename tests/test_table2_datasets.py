"""SVHN and STL-10 end to end: tiny files in the real on-disk format, through the train CLI, on
every augmentation backend a policy allows (RandAugment: pil and tensor; CTAugment: tensor)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixmatch_ray.config import RunConfig
from fixmatch_ray.data.datasets.svhn import split_svhn
from fixmatch_ray.train import main
from fixmatch_ray.training.checkpoint import load_checkpoint
from fixmatch_ray.training.loop import load_run_data, step_batches
from test_dataset_stl10 import write_stl10
from test_dataset_svhn import write_svhn

BACKENDS = [("randaugment", "pil"), ("randaugment", "tensor"), ("ctaugment", "tensor")]
RUN = ["--batch-size", "4", "--mu", "1", "--total-steps", "2", "--eval-step", "1", "--width", "1",
       "--num-workers", "0", "--no-progress", "--no-download"]
# a skewed class distribution, as SVHN's (digit 1 the largest); 60 training images
SVHN_COUNTS = [3, 12, 9, 7, 6, 5, 5, 5, 4, 4]


@pytest.fixture(scope="module")
def svhn_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("svhn")
    rng = np.random.default_rng(1)
    write_svhn(root, "train", rng.permutation(np.repeat(np.arange(10), SVHN_COUNTS)), seed=1)
    write_svhn(root, "test", rng.permutation(np.arange(20) % 10), seed=2)
    return root


@pytest.fixture(scope="module")
def stl10_root(tmp_path_factory) -> tuple[Path, dict]:
    # folds of 4 indices into 40 train images; the runs below shrink the fold size to match
    # (1000-image folds would make the tensor path tabulate 1,024 images x 50 crop variants, 1.4 GB)
    root = tmp_path_factory.mktemp("stl10")
    return root, write_stl10(root, sizes={"train": 40, "unlabeled": 24, "test": 10}, fold_size=4)


def _history(out: Path) -> list[dict]:
    return json.loads((out / "metrics.json").read_text())["history"]


@pytest.mark.parametrize("policy, backend", BACKENDS)
def test_svhn_run(svhn_root, tmp_path, policy, backend):
    out = tmp_path / "run"
    # 13 labels: not a multiple of the 10 classes, fine under the class-distribution rule
    args = ["--dataset", "svhn", "--data-dir", str(svhn_root), "--num-labeled", "13", "--seed", "2",
            "--depth", "10", "--policy", policy, "--aug-backend", backend, "--out", str(out), *RUN]
    assert main(args) == 0
    assert [h["step"] for h in _history(out)] == [1, 2]
    state, _ = load_checkpoint(out)
    cfg = RunConfig.from_dict(state["config"])
    assert (cfg.dataset, cfg.policy, cfg.aug_backend, cfg.depth, cfg.scales) == ("svhn", policy, backend, 10, None)
    data = load_run_data(cfg)
    assert len(data.train) == 60 and len(data.test.targets) == 20 and not data.spec.flip
    assert data.labeled_idx.tolist() == split_svhn(data.train.targets, 13, 2).tolist()
    assert np.bincount(data.train.targets[data.labeled_idx], minlength=10).tolist() == \
        [1, 2, 2, 2, 1, 1, 1, 1, 1, 1]  # by class frequency: digit 1 (12 images) first in line
    if backend == "tensor":
        store = step_batches(cfg, data, 0).store
        assert (store.flip, store.pad) == (False, 4)


@pytest.mark.parametrize("policy, backend", BACKENDS)
def test_stl10_run(stl10_root, tmp_path, monkeypatch, policy, backend):
    from fixmatch_ray.data.datasets import stl10

    root, files = stl10_root
    monkeypatch.setattr(stl10, "FOLD_SIZE", 4)  # the tiny files' folds (the real ones hold 1000)
    out = tmp_path / "run"
    # a tiny net of the official 5 scales: depth 1 + 5 * (2*1 + 1) = 16, one block per stage
    args = ["--dataset", "stl10", "--data-dir", str(root), "--num-labeled", "4", "--seed", "3",
            "--depth", "16", "--policy", policy, "--aug-backend", backend, "--out", str(out), *RUN]
    assert main(args) == 0
    assert [h["step"] for h in _history(out)] == [1, 2]
    cfg = RunConfig.from_dict(load_checkpoint(out)[0]["config"])
    assert (cfg.depth, cfg.width, cfg.scales) == (16, 1, 5)
    data = load_run_data(cfg)
    assert data.labeled_idx.tolist() == sorted(files["folds"][3].tolist())  # seed 3 = fold line 3
    assert len(data.train) == 40 + 24 and data.test.images.shape == (10, 96, 96, 3)  # train + unlabeled
    batch = next(iter(step_batches(cfg, data, 0)))
    assert batch["x_lb"][0].shape == (4, 3, 96, 96) and batch["x_ulb"][1].shape == (4, 3, 96, 96)
    if backend == "tensor":
        store = step_batches(cfg, data, 0).store
        assert (store.flip, store.pad) == (True, 12)  # reflect pad 1/8 of the side: 12 at 96 px


def test_pil_weak_crop_pads_an_eighth_of_the_side():
    from PIL import Image

    from fixmatch_ray.data.policies.randaugment import weak_augment

    # a ramp image: the crop's shift shows in the top-left pixel; over many draws the shifts
    # cover exactly -12..12 (reflect padding of 12 at 96 px)
    ramp = np.tile(np.arange(96, dtype=np.uint8)[None, :, None], (96, 1, 3))
    rng = np.random.default_rng(0)
    lefts = {int(np.asarray(weak_augment(Image.fromarray(ramp), rng, flip=False))[0, 12, 0]) - 12
             for _ in range(400)}
    assert lefts == set(range(-12, 13))


@pytest.mark.parametrize("dataset, want", [("svhn", "train_32x32.mat"), ("stl10", "train_X.bin")])
def test_missing_dataset_offline_is_one_line(tmp_path, dataset, want):
    labels = "40" if dataset == "svhn" else "1000"
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "fixmatch_ray.train", "--dataset", dataset, "--num-labeled",
                           labels, "--data-dir", str(tmp_path / "none"), "--no-download", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode == 1 and len(err.splitlines()) == 1, err
    assert want in err and str(tmp_path / "none") in err and "Traceback" not in err
    assert not out.exists()


def test_missing_fold_file_is_one_line(tmp_path, capsys):
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "fold_indices.txt").unlink()
    args = ["--dataset", "stl10", "--data-dir", str(tmp_path), "--num-labeled", "1000", "--seed", "1",
            "--out", str(tmp_path / "run"), *RUN]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "fold_indices.txt" in err and "\n" not in err
