"""The labeled split (data/splits.py): the rule of the official scripts/create_split.py (lines
72-93: class-distribution greedy draw after np.random.seed(seed) shuffles each class's positions;
seed 0 does not shuffle), for every dataset but STL-10, with hand-derived indices."""
from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from fixmatch_ray.data.datasets import DATASETS, load_dataset
from fixmatch_ray.data.splits import check_distribution_labels, split_by_distribution


def _targets(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_hand_derived_indices_on_an_interleaved_dataset():
    # 10 images, file order: classes 0 1 0 2 1 0 0 1 2 0 -> class 0 at 0, 2, 5, 6, 9; class 1 at
    # 1, 4, 7; class 2 at 3, 8. s = (5, 3, 2) / 5 = (1, .6, .4); seed 0: each class in file order.
    # label | n before | s - n / max(max n, 1)     | class | image
    #   1   | (0,0,0)  | (1, .6, .4)                | 0     | 0
    #   2   | (1,0,0)  | (0, .6, .4)                | 1     | 1
    #   3   | (1,1,0)  | (0, -.4, .4)               | 2     | 3
    #   4   | (1,1,1)  | (0, -.4, -.6)              | 0     | 2
    #   5   | (2,1,1)  | (0, .1, -.1)               | 1     | 4
    #   6   | (2,2,1)  | (0, -.4, -.1)              | 0     | 5
    #   7   | (3,2,1)  | (0, -.067, .067)           | 2     | 8
    #   8   | (3,2,2)  | (0, -.067, -.267)          | 0     | 6
    #   9   | (4,2,2)  | (0, .1, -.1)               | 1     | 7
    #  10   | (4,3,2)  | (0, -.15, -.1)             | 0     | 9
    t = np.array([0, 1, 0, 2, 1, 0, 0, 1, 2, 0])
    order = [0, 1, 3, 2, 4, 5, 8, 6, 7, 9]
    for n in range(1, 11):
        assert split_by_distribution(t, n, seed=0).tolist() == sorted(order[:n])
    # seed 3: np.random.seed(3), then np.random.shuffle of each class's positions, class 0 first;
    # the first 4 labels are then the first image of classes 0, 1, 2 and the second of class 0
    rs = np.random.RandomState(3)
    c0, c1, c2 = [0, 2, 5, 6, 9], [1, 4, 7], [3, 8]
    for c in (c0, c1, c2):
        rs.shuffle(c)
    assert split_by_distribution(t, 4, seed=3).tolist() == sorted([c0[0], c1[0], c2[0], c0[1]])


def _official_create_split(labels: np.ndarray, size: int, seed: int) -> list[int]:
    """scripts/create_split.py's main loop, restated: positions per class in file order, the
    global np.random seeded and each class shuffled in class order (seed 0: not at all), then
    the greedy draw; the label set as the sorted positions."""
    class_id = defaultdict(list)
    for pos, c in enumerate(labels):
        class_id[int(c)].append(pos)
    nclass = len(class_id)
    stats = np.array([len(class_id[i]) for i in range(nclass)], np.float64)
    stats /= stats.max()
    class_id = [np.array(class_id[i], dtype=np.int64) for i in range(nclass)]
    if seed:
        np.random.seed(seed)
        for i in range(nclass):
            np.random.shuffle(class_id[i])
    npos = np.zeros(nclass, np.int64)
    label = []
    for _ in range(size):
        c = np.argmax(stats - npos / max(npos.max(), 1))
        label.append(class_id[c][npos[c]])
        npos[c] += 1
    return sorted(int(x) for x in label)


@pytest.mark.parametrize("seed", [0, 1, 3, 5])
@pytest.mark.parametrize("counts", [[50] * 10, [20, 15, 12, 10, 8, 6, 5, 4, 4, 2], [7, 3, 3, 1]])
def test_same_images_as_the_official_script(counts, seed):
    labels = np.random.default_rng(seed).permutation(_targets(counts))
    state = np.random.get_state()
    for size in sorted({1, len(counts), 10, 40, len(labels)} & set(range(1, len(labels) + 1))):
        want = _official_create_split(labels, size, seed)
        assert split_by_distribution(labels, size, seed).tolist() == want
    np.random.set_state(state)


def test_distribution_split_step_by_step():
    # 3 classes of 4, 2 and 1 images: s = (1, 0.5, 0.25). Label k goes to argmax(s - n/max(max n, 1)):
    # n=(0,0,0): s -> c0 | (1,0,0): (0, .5, .25) -> c1 | (1,1,0): (0, -.5, .25) -> c2
    # (1,1,1): (0, -.5, -.75) -> c0 | (2,1,1): (0, 0, -.25) -> c0 (tie, lowest class)
    # (3,1,1): (0, .5-1/3, .25-1/3) -> c1 | (3,2,1): (0, -1/6, -1/12) -> c0
    t = _targets([4, 2, 1])
    counts = [[1, 0, 0], [1, 1, 0], [1, 1, 1], [2, 1, 1], [3, 1, 1], [3, 2, 1], [4, 2, 1]]
    for k, want in enumerate(counts, start=1):
        got = split_by_distribution(t, k, seed=0)
        assert np.bincount(t[got], minlength=3).tolist() == want
    # seed 0 = no shuffling: the first images of each class in file order
    assert split_by_distribution(t, 6, seed=0).tolist() == [0, 1, 2, 4, 5, 6]


def test_forty_labels_over_a_skewed_distribution():
    # counts (20, 15, 12, 10, 8, 6, 5, 4, 4, 2): s = (1, .75, .6, .5, .4, .3, .25, .2, .2, .1).
    # Once class 0 has m labels, class c has ceil(s_c*m) (an exact s_c*m stops at s_c*m: tie with
    # class 0, which wins). Totals m + sum ceil(s_c*m): m=1: 10, 2: 13, 3: 17, 4: 20, 5: 24, 6: 30,
    # 7: 35, 8: 37 with n = (8, 6, 5, 4, 4, 3, 2, 2, 2, 1). Label 38 is class 0's 9th; then the
    # classes below their share at m=9, furthest first: c1 (.75-6/9=.083), c3 (.5-4/9=.056),
    # c2 (.6-5/9=.044), c6 (.25-2/9=.028). Labels 39, 40: c1, c3.
    t = _targets([20, 15, 12, 10, 8, 6, 5, 4, 4, 2])
    idx = split_by_distribution(t, 40, seed=0)
    assert np.bincount(t[idx], minlength=10).tolist() == [9, 7, 5, 5, 4, 3, 2, 2, 2, 1]
    assert np.bincount(t[split_by_distribution(t, 37, seed=5)], minlength=10).tolist() == [8, 6, 5, 4, 4, 3, 2, 2, 2, 1]
    # proportional shares would be 40*count/86 = (9.3, 7.0, 5.6, 4.7, 3.7, 2.8, 2.3, 1.9, 1.9, 0.9)


def test_seeded_split_draws_the_official_stream():
    # official: np.random.seed(seed); np.random.shuffle(class_id[i]) for i in range(nclass); then
    # class c's labels are the first n_c of its shuffled list
    t = np.random.default_rng(0).permutation(_targets([20, 15, 12, 10, 8, 6, 5, 4, 4, 2]))
    n = [9, 7, 5, 5, 4, 3, 2, 2, 2, 1]
    rs = np.random.RandomState(3)
    want = []
    for c in range(10):
        members = np.flatnonzero(t == c)
        want += members[rs.permutation(len(members))[:n[c]]].tolist()
    got = split_by_distribution(t, 40, seed=3)
    assert got.tolist() == sorted(want)
    assert np.array_equal(got, split_by_distribution(t, 40, seed=3))
    assert not np.array_equal(got, split_by_distribution(t, 40, seed=4))
    state = np.random.get_state()[1].copy()
    split_by_distribution(t, 40, seed=7)
    assert np.array_equal(np.random.get_state()[1], state)  # the global RNG is untouched


def test_exactly_balanced_classes_are_dealt_round_robin():
    # CIFAR's classes are exactly balanced: s = 1 for all, so the labels go 0, 1, ..., C-1, 0, ...
    t = np.random.default_rng(2).permutation(np.repeat(np.arange(10), 50))
    for n in (10, 40, 250):
        assert np.bincount(t[split_by_distribution(t, n, seed=1)], minlength=10).tolist() == [n // 10] * 10
    assert np.bincount(t[split_by_distribution(t, 45, seed=1)], minlength=10).tolist() == [5] * 5 + [4] * 5


def test_split_is_identical_in_another_process():
    code = ("import numpy as np; from fixmatch_ray.data.splits import split_by_distribution; "
            "t = np.arange(1000) % 10; print(split_by_distribution(t, 250 - 50, 7).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == split_by_distribution(np.arange(1000) % 10, 200, 7).tolist()


def test_split_errors():
    t = _targets([4, 2, 1])
    with pytest.raises(ValueError, match="positive"):
        split_by_distribution(t, 0, 1)
    with pytest.raises(ValueError, match="class 1 has no image"):
        split_by_distribution(np.array([0, 2, 2]), 2, 1)
    with pytest.raises(ValueError, match="num_labeled 8 is more than the 7 training images"):
        split_by_distribution(t, 8, 1)
    assert len(split_by_distribution(t, 7, 1)) == 7  # every image: no class runs dry before the end
    assert check_distribution_labels("x", 7, 7) is None
    assert "must be 1..7 (its training images), got 8" in check_distribution_labels("x", 7, 8)
    assert "must be a positive" in check_distribution_labels("x", 7, 0)


# -- the registry: one rule for CIFAR-10/100 and digits (SVHN: tests/test_dataset_svhn.py) ----------
def test_cifar_split_is_the_official_rule_over_torchvision_order(cifar10_root):
    train = load_dataset("cifar10", cifar10_root, "train", download=False)
    spec = DATASETS["cifar10"]
    for seed in (0, 1, 3):
        got = spec.split(str(cifar10_root), train.targets, 40, seed)
        assert got.tolist() == _official_create_split(train.targets, 40, seed)
    assert spec.check_num_labeled(45) is None and spec.check_num_labeled(50_000) is None
    assert DATASETS["cifar100"].num_train == 50_000 and DATASETS["cifar100"].check_num_labeled(400) is None


def test_digits_split_is_the_official_rule():
    train = load_dataset("digits", "unused", "train")
    for n, per_class in ((20, 2), (50, 5)):
        idx = DATASETS["digits"].split("unused", train.targets, n, 1)
        assert idx.tolist() == _official_create_split(train.targets, n, 1)
        assert np.bincount(train.targets[idx]).tolist() == [per_class] * 10  # 139..146 images per class
