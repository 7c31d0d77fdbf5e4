"""STL-10: tiny binary files in the real layout, read through torchvision; folds; the crop store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixmatch_ray.errors import DataError
from fixmatch_ray.data.datasets.stl10 import load_stl10, stl10_fold

SIZES = {"train": 20, "unlabeled": 15, "test": 10}


def write_stl10(root: Path, seed: int = 0, sizes: dict | None = None, fold_size: int = 4) -> dict:
    """``stl10_binary/`` as in the archive: ``*_X.bin`` uint8 images, each channel stored column by
    column (column-major); ``*_y.bin`` labels 1..10; ``fold_indices.txt`` 10 lines of
    ``fold_size`` 0-based indices into train, space-separated (with the trailing space of the real
    file). ``sizes``: images per split (``SIZES`` by default)."""
    rng = np.random.default_rng(seed)
    sizes = sizes or SIZES
    d = root / "stl10_binary"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in sizes.items():
        images = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
        # (N, H, W, C) -> per image, per channel, per column (x), the rows (y): (N, C, W, H)
        (d / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
        labels = rng.permutation(np.arange(n) % 10) if split != "unlabeled" else None
        if labels is not None:
            (d / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        out[split] = (images, labels)
    folds = [rng.choice(sizes["train"], fold_size, replace=False) for _ in range(10)]
    (d / "fold_indices.txt").write_text("".join(" ".join(map(str, f)) + " \n" for f in folds))
    out["folds"] = folds
    return out


@pytest.fixture(scope="module")
def stl_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stl10")
    return root, write_stl10(root)


def test_splits_through_torchvision(stl_root):
    root, files = stl_root
    for split in ("train", "test"):
        data = load_stl10(root, split, download=False)
        images, labels = files[split]
        assert data.images.shape == (SIZES[split], 96, 96, 3) and data.images.dtype == np.uint8
        assert np.array_equal(data.images, images)  # column-major on disk, (H, W, C) here
        assert np.array_equal(data.targets, labels)  # 1..10 on disk
    unl = load_stl10(root, "unlabeled", download=False)
    assert np.array_equal(unl.images, files["unlabeled"][0])
    assert unl.targets.tolist() == [-1] * SIZES["unlabeled"]


def test_unlabeled_set_is_train_then_unlabeled(stl_root):
    root, files = stl_root
    both = load_stl10(root, "train+unlabeled", download=False)
    assert len(both) == SIZES["train"] + SIZES["unlabeled"]  # 5,000 + 100,000 in the real files
    assert np.array_equal(both.images, np.concatenate([files["train"][0], files["unlabeled"][0]]))
    assert both.targets[:SIZES["train"]].tolist() == files["train"][1].tolist()
    assert (both.targets[SIZES["train"]:] == -1).all()


def test_seed_k_is_fold_line_k_from_zero(stl_root):
    from torchvision.datasets import STL10

    class Unhashed(STL10):  # the tiny files have not the real md5s
        def _check_integrity(self) -> bool:
            return True

    root, files = stl_root
    train = load_stl10(root, "train", download=False)
    both = load_stl10(root, "train+unlabeled", download=False)
    for k in range(10):
        idx = stl10_fold(root, k)
        assert idx.tolist() == sorted(files["folds"][k].tolist())  # line k (0-based), as create_split.py
        tv = Unhashed(str(root), split="train", folds=k)  # torchvision's fold k: the same images
        order = np.argsort(files["folds"][k])
        assert np.array_equal(train.images[idx], tv.data.transpose(0, 2, 3, 1)[order])
        assert np.array_equal(both.targets[idx], tv.labels[order])  # the pool indexes train+unlabeled too
    assert stl10_fold(root, 3).tolist() != stl10_fold(root, 4).tolist()
    with pytest.raises(ValueError, match=r"must be 0..9 \(the official runs use 1..5\), got 10"):
        stl10_fold(root, 10)


def test_missing_offline_is_one_line(tmp_path):
    with pytest.raises(DataError) as e:
        load_stl10(tmp_path, "test", download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "stl10_binary") in msg
    assert "test_X.bin, test_y.bin" in msg and "stl10_binary.tar.gz" in msg
    with pytest.raises(DataError, match="fold_indices.txt") as e:
        stl10_fold(tmp_path, 1)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="train, unlabeled, test, train\\+unlabeled, got 'extra'"):
        load_stl10(tmp_path, "extra", download=False)


def test_only_the_split_files_are_needed_and_nothing_is_downloaded(tmp_path, monkeypatch):
    import torchvision.datasets.stl10 as tv_stl10

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_stl10, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match=r"download failed \(network is unreachable\)") as e:
        load_stl10(tmp_path, "train", download=True)
    assert "\n" not in str(e.value)
    files = write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").unlink()
    test = load_stl10(tmp_path, "test", download=True)  # present: no download, no hashing
    assert np.array_equal(test.images, files["test"][0])
    with pytest.raises(DataError, match="unlabeled_X.bin"):
        load_stl10(tmp_path, "train+unlabeled", download=False)


def test_resident_crop_store_for_the_105k_training_images():
    import torch

    from fixmatch_ray.data.batched import CropStore

    x = torch.empty((105_000, 3, 96, 96), dtype=torch.uint8, device="meta")  # shapes, no memory
    store = CropStore(x, flip=True)
    assert (store.pad, store.variants) == (12, 50)  # 2 * (2*12 + 1) column variants
    assert x.numel() == 2_903_040_000  # 2.70 GiB kept as is
    assert x.numel() * store.variants == 145_152_000_000 > 6 << 30  # 135.2 GiB if tabulated
    assert not store.tabulated and store.data.shape == x.shape


# -- the registry's spec --------------------------------------------------------------------------
def test_registry_spec(stl_root):
    from fixmatch_ray.data.datasets import get_spec, load_dataset

    root, files = stl_root
    spec = get_spec("stl10")
    assert (spec.num_classes, spec.image_size, spec.flip, spec.unlabeled_split) == (10, 96, True, "train+unlabeled")
    assert spec.arch_defaults["wideresnet"] == {"depth": 46, "width": 2, "scales": 5}  # the official 5 scales
    pool = load_dataset("stl10", root, spec.unlabeled_split, download=False)
    assert len(pool) == SIZES["train"] + SIZES["unlabeled"]
    assert len(load_dataset("stl10", root, "test", download=False)) == SIZES["test"]


def test_seed_and_label_count_are_config_errors():
    from fixmatch_ray.config import RunConfig
    from fixmatch_ray.errors import ConfigError

    for bad, want in (({"seed": 10}, "seed: stl10 picks its labeled set by the seed, one of its 10 folds: "
                                     "the seed must be 0..9, got 10"),
                      ({"num_labeled": 250}, "num_labeled: stl10's labeled sets are its own folds of 1000"),
                      ({"depth": 28}, "depth: 28 does not fit a wideresnet of 5 scales")):
        with pytest.raises(ConfigError) as e:
            RunConfig(**{"dataset": "stl10", "num_labeled": 1000, **bad})
        assert str(e.value).startswith(want) and "\n" not in str(e.value)
    cfg = RunConfig(dataset="stl10", num_labeled=1000, seed=9).resolved()
    assert (cfg.depth, cfg.width, cfg.scales, cfg.wdecay) == (46, 2, 5, 5e-4)
    drawn = {RunConfig(dataset="stl10", num_labeled=1000).resolved().seed for _ in range(50)}
    assert drawn <= set(range(10)) and len(drawn) > 1  # a drawn seed is a fold too
    assert RunConfig(dataset="stl10", num_labeled=1000, depth=10, scales=3).resolved().scales == 3


def test_a_fold_of_the_wrong_size_is_one_line(tmp_path):
    from fixmatch_ray.data.datasets import get_spec

    files = write_stl10(tmp_path)  # folds of 4 indices, not 1000
    with pytest.raises(DataError) as e:
        get_spec("stl10").split(str(tmp_path), files["train"][1], 1000, 2)
    msg = str(e.value)
    assert "fold 2 must hold 1000 distinct indices into the 20 train images; it has 4" in msg and "\n" not in msg
    assert get_spec("stl10").split(str(tmp_path), files["train"][1], 4, 2).tolist() == sorted(files["folds"][2])
