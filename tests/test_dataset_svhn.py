"""SVHN: tiny .mat files in the real layout, read through torchvision; the official split rule."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixmatch_ray.errors import DataError
from fixmatch_ray.data.datasets.svhn import channel_mean_std, load_svhn, split_svhn

# SVHN's train set per digit (0..9): 73,257 images, digit 1 the largest class
SVHN_TRAIN_COUNTS = [4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659]


def write_svhn(root: Path, split: str, digits: np.ndarray, seed: int = 0) -> np.ndarray:
    """``<split>_32x32.mat`` as the real files: X uint8 (32, 32, 3, N), y uint8 (N, 1) with 10 for a
    0. Returns the images as (N, 32, 32, 3)."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(digits), 32, 32, 3), dtype=np.uint8)
    y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": y})
    return images


@pytest.fixture(scope="module")
def svhn_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("svhn")
    rng = np.random.default_rng(0)
    digits = {s: rng.permutation(np.arange(n) % 10) for s, n in (("train", 30), ("test", 12), ("extra", 20))}
    images = {s: write_svhn(root, s, d, seed=i) for i, (s, d) in enumerate(digits.items())}
    return root, digits, images


def test_train_and_test_through_torchvision(svhn_root):
    root, digits, images = svhn_root
    for split in ("train", "test"):
        data = load_svhn(root, split, download=False)
        assert data.images.shape == (len(digits[split]), 32, 32, 3) and data.images.dtype == np.uint8
        assert data.targets.dtype == np.int64
        assert np.array_equal(data.images, images[split])  # pixel layout: X[h, w, c, n] -> [n, h, w, c]
        assert np.array_equal(data.targets, digits[split])  # label 10 on disk is the digit 0
    assert 0 in digits["train"]


def test_extra_follows_train_in_file_order(svhn_root):
    root, digits, images = svhn_root
    both = load_svhn(root, "train", download=False, extra=True)
    assert len(both) == 30 + 20
    assert np.array_equal(both.images, np.concatenate([images["train"], images["extra"]]))
    assert np.array_equal(both.targets, np.concatenate([digits["train"], digits["extra"]]))
    assert len(load_svhn(root, "train", download=False)) == 30  # default: svhn_noextra, as Table 2
    assert len(load_svhn(root, "test", download=False, extra=True)) == 12  # one test set for both


def test_missing_offline_is_one_line(tmp_path):
    with pytest.raises(DataError) as e:
        load_svhn(tmp_path, "train", download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "train_32x32.mat" in msg
    write_svhn(tmp_path, "train", np.arange(10))
    with pytest.raises(DataError, match="extra_32x32.mat") as e:
        load_svhn(tmp_path, "train", download=False, extra=True)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="'train' or 'test', got 'extra'"):
        load_svhn(tmp_path, "extra", download=False)


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.svhn as tv_svhn

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(tv_svhn, "download_url", offline)
    with pytest.raises(DataError, match="download failed") as e:
        load_svhn(tmp_path / "data", "test", download=True)
    msg = str(e.value)
    assert "\n" not in msg and "no route to host" in msg and "test_32x32.mat" in msg
    # present files are not downloaded again (nor hashed)
    write_svhn(tmp_path / "data", "test", np.arange(10))
    assert len(load_svhn(tmp_path / "data", "test", download=True)) == 10


# -- the official split rule ----------------------------------------------------------------------
def _targets(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_svhn_forty_labels_in_the_official_class_order():
    # official classes are digit-1 (digit 1 = class 0 = the largest, digit 0 = class 9):
    # s = (1, .764, .613, .538, .497, .413, .404, .364, .336, .357) for digits 1..9, 0.
    # Totals m + sum ceil(s_c*m): m=6 -> 37 with digits 1..9,0 at (6, 5, 4, 4, 3, 3, 3, 3, 3, 3);
    # label 38: digit 1's 7th; then at m=7 the deficits are digit 5 (.497-3/7=.068), digit 2
    # (.764-5/7=.049), digit 3 (.613-4/7=.042): labels 39, 40 go to digits 5 and 2.
    t = _targets(SVHN_TRAIN_COUNTS)
    for seed in (1, 2):
        idx = split_svhn(t, 40, seed)
        assert np.bincount(t[idx], minlength=10).tolist() == [3, 7, 6, 4, 4, 4, 3, 3, 3, 3]
    # digit 1 is the official class 0: its images are shuffled first, by the seed's first draws
    ones = np.flatnonzero(t == 1)
    want = ones[np.random.RandomState(1).permutation(len(ones))[:7]]
    idx = split_svhn(t, 40, 1)
    assert sorted(idx[t[idx] == 1].tolist()) == sorted(want.tolist())


def test_channel_mean_std_by_hand():
    # two 1x1 images: channel 0 = (0, 1), channel 1 = (1, 1), channel 2 = (.2, .4)
    images = np.array([[[[0, 255, 51]]], [[[255, 255, 102]]]], dtype=np.uint8)
    mean, std = channel_mean_std(images, chunk=1)
    assert mean == pytest.approx((0.5, 1.0, 0.3))
    assert std == pytest.approx((0.5, 0.0, 0.1))


def test_split_of_loaded_files_indexes_the_training_set(svhn_root):
    root, digits, _ = svhn_root
    data = load_svhn(root, "train", download=False)
    idx = split_svhn(data.targets, 10, seed=1)  # 3 images per digit: one label each
    assert len(idx) == 10 and idx.max() < len(data)
    assert sorted(data.targets[idx].tolist()) == list(range(10))


# -- the registry's specs -------------------------------------------------------------------------
def test_registry_specs(svhn_root):
    from fixmatch_ray.data.datasets import get_spec, load_dataset

    root, digits, images = svhn_root
    svhn, extra = get_spec("svhn"), get_spec("svhn_extra")
    for spec in (svhn, extra):
        assert (spec.num_classes, spec.image_size, spec.flip) == (10, 32, False)  # no flip: a mirrored 2 is no 2
        assert spec.arch_defaults["wideresnet"] == {"depth": 28, "width": 2}
        assert spec.mean == (0.4377, 0.4438, 0.4728) and spec.std == (0.1980, 0.2010, 0.1970)
        assert spec.unlabeled_split is None  # the unlabeled set is the training set
    assert len(load_dataset("svhn", root, "train", download=False)) == 30  # Table 2's svhn_noextra
    both = load_dataset("svhn_extra", root, "train", download=False)  # the official svhn
    assert np.array_equal(both.images, np.concatenate([images["train"], images["extra"]]))
    assert len(load_dataset("svhn_extra", root, "test", download=False)) == 12
    t = digits["train"]
    assert svhn.split(str(root), t, 13, 2).tolist() == split_svhn(t, 13, 2).tolist()


def test_label_counts_follow_the_distribution_rule():
    from fixmatch_ray.config import RunConfig
    from fixmatch_ray.data.datasets import get_spec
    from fixmatch_ray.errors import ConfigError

    svhn, extra = get_spec("svhn"), get_spec("svhn_extra")
    for n in (1, 40, 45, 250, 1000, 73_257):  # any count: 45 is not a multiple of the 10 classes
        assert svhn.check_num_labeled(n) is None
    assert "must be 1..73257 (its training images), got 73258" in svhn.check_num_labeled(73_258)
    assert "got 0" in svhn.check_num_labeled(0)
    assert extra.check_num_labeled(73_258) is None and extra.check_num_labeled(604_389) is not None
    assert RunConfig(dataset="svhn", num_labeled=45).resolved().wdecay == 5e-4
    with pytest.raises(ConfigError) as e:
        RunConfig(dataset="svhn", num_labeled=100_000)
    assert str(e.value).startswith("num_labeled: svhn spreads labels by its class distribution") and \
        "\n" not in str(e.value)
    RunConfig(dataset="cifar10", num_labeled=45)  # CIFAR too: the same official rule


def test_every_training_image_can_be_labeled_on_the_real_counts():
    t = _targets(SVHN_TRAIN_COUNTS)
    assert len(np.unique(split_svhn(t, len(t), 1))) == len(t) == 73_257
