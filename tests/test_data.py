import numpy as np
import pytest

from fixmatch_ray.data.datasets import DATASETS, load_dataset
from fixmatch_ray.data.sampling import LABELED, UNLABELED, StepBatchSampler, stream_positions
from fixmatch_ray.data.splits import expand_labeled
from fixmatch_ray.errors import DataError


def test_expand_labels_like_the_reference():
    idx = np.arange(40)
    # ceil(64 * 1024 / 40) = 1639 copies: one pass over the list lasts eval_step steps
    assert len(expand_labeled(idx, 64, 1024, expand=True)) == 40 * 1639
    assert len(expand_labeled(idx, 64, 1024, expand=False)) == 40 * 1639  # fewer labels than B
    big = np.arange(4000)
    assert len(expand_labeled(big, 64, 1024, expand=False)) == 4000
    assert np.bincount(expand_labeled(big, 64, 1024, expand=True)).tolist() == [17] * 4000


def test_stream_covers_each_epoch_once():
    n, b = 50, 8
    drawn = np.concatenate([stream_positions(0, UNLABELED, n, s, b) for s in range(25)])  # 200 = 4 epochs
    for e in range(4):
        assert sorted(drawn[e * n:(e + 1) * n]) == list(range(n))
    assert np.array_equal(stream_positions(0, UNLABELED, n, 3, b), drawn[24:32])
    assert not np.array_equal(stream_positions(1, UNLABELED, n, 3, b), drawn[24:32])


def test_ranks_share_out_the_one_worker_batch():
    lab = np.arange(0, 200, 5)
    one = StepBatchSampler(lab, 200, 8, 56, seed=2, start_step=4, total_steps=7)
    two = [StepBatchSampler(lab, 200, 8, 56, 2, 4, 7, rank=r, world_size=2) for r in range(2)]
    for keys, k0, k1 in zip(one, *two):
        assert len(k0) == len(k1) == (8 + 56) // 2
        assert sorted(k0 + k1) == sorted(keys)
        assert sum(k[0] == LABELED for k in k0) == 4
    assert len(one) == 3
    with pytest.raises(ValueError, match="not divisible by 3 workers"):
        StepBatchSampler(lab, 200, 8, 56, 2, 0, 7, rank=0, world_size=3)


def test_digits_split_and_stats():
    train, test = load_dataset("digits", "unused", "train"), load_dataset("digits", "unused", "test")
    assert len(train) + len(test) == 1797 and len(test) == 364
    assert train.images.shape[1:] == (16, 16, 3) and train.images.dtype == np.uint8
    assert len(train) == DATASETS["digits"].num_train
    x = train.images / 255.0
    assert x.mean() == pytest.approx(DATASETS["digits"].mean[0], abs=1e-3)
    assert x.std() == pytest.approx(DATASETS["digits"].std[0], abs=1e-3)


def test_cifar_files_through_torchvision(cifar10_root, tmp_path):
    from conftest import write_cifar

    train = load_dataset("cifar10", cifar10_root, "train", download=False)
    test = load_dataset("cifar10", cifar10_root, "test", download=False)
    assert train.images.shape == (200, 32, 32, 3) and len(test) == 50
    assert np.bincount(train.targets).tolist() == [20] * 10
    c100 = write_cifar(tmp_path / "c100", "cifar100", train_per_class=2, test_per_class=1)
    assert len(load_dataset("cifar100", c100, "train", download=False)) == 200


def test_missing_cifar_offline_names_the_folder(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py") as e:
        load_dataset("cifar10", tmp_path, "train", download=False)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_failed_cifar_download_is_one_line_and_leaves_the_lock_free(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    for _ in range(2):  # the second attempt is not stuck behind the first one's file lock
        with pytest.raises(DataError, match="download failed") as e:
            load_dataset("cifar100", tmp_path, "train", download=True)
        msg = str(e.value)
        assert "\n" not in msg and "no route to host" in msg and "cifar-100-python" in msg
