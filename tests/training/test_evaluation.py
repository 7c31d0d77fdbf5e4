"""The evaluation's figures: hand-computed on a small confusion matrix, scikit-learn's on a large
one, and the counting over batches and a fake collective."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fixmatch_ray.training.evaluation import figures, evaluate_model


def test_figures_of_a_small_matrix_by_hand():
    # rows: true class. class 0: 3 of 4 right; class 1: 1 of 2; class 2: 0 of 1 (predicted as 0)
    m = [[3, 1, 0], [1, 1, 0], [1, 0, 0]]
    f = figures(m, loss_sum=7.0, top5_hits=7)
    assert f["loss"] == 1.0 and f["acc"] == pytest.approx(100 * 4 / 7)
    assert f["class_acc"] == pytest.approx([75.0, 50.0, 0.0])
    assert f["balanced_acc"] == pytest.approx((75 + 50 + 0) / 3)
    # F1 per class = 2TP / (true + predicted): 6/(4+5), 2/(2+2), 0/(1+0)
    assert f["macro_f1"] == pytest.approx(100 * (6 / 9 + 2 / 4 + 0) / 3)
    assert "top5_acc" not in f  # 3 classes: top-5 is always 100, not reported


def test_a_class_absent_from_the_set_is_left_out_of_the_means():
    f = figures([[2, 0], [0, 0]], 0.0, 0)
    assert math.isnan(f["class_acc"][1]) and f["balanced_acc"] == 100.0 and f["macro_f1"] == 100.0


def test_figures_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, top_k_accuracy_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 500)
    logits = rng.normal(size=(500, 8)) + 2.0 * np.eye(8)[y]
    pred = logits.argmax(1)
    m = confusion_matrix(y, pred, labels=range(8)).tolist()
    top5 = int(sum(yi in np.argsort(-li)[:5] for yi, li in zip(y, logits)))
    f = figures(m, 0.0, top5)
    assert f["balanced_acc"] == pytest.approx(100 * balanced_accuracy_score(y, pred))
    assert f["macro_f1"] == pytest.approx(100 * f1_score(y, pred, average="macro"))
    assert f["top5_acc"] == pytest.approx(100 * top_k_accuracy_score(y, logits, k=5))


class FixedLogits(torch.nn.Module):
    """A 'network' whose logits are stored per image (the image's first pixel is its index)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].round().long()]


class Images:
    def __init__(self, y):
        self.y = y

    def batches(self, batch_size, rank, world):
        idx = torch.arange(len(self.y), dtype=torch.float32)
        for lo in range(0, len(self.y), batch_size):
            yield idx[lo:lo + batch_size].view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone(), self.y[lo:lo + batch_size]


class Local:
    rank, world_size = 0, 1

    def all_reduce(self, t, op):
        return t


def test_evaluate_counts_over_batches():
    from contextlib import nullcontext
    from sklearn.metrics import confusion_matrix, log_loss

    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 37)
    logits = torch.tensor(rng.normal(size=(37, 7)), dtype=torch.float32)
    ev = evaluate_model(FixedLogits(logits), Images(torch.tensor(y)), 7, 5, Local(), nullcontext)
    assert ev["confusion"] == confusion_matrix(y, logits.argmax(1).numpy(), labels=range(7)).tolist()
    assert ev["loss"] == pytest.approx(log_loss(y, torch.softmax(logits, 1).numpy(), labels=range(7)), rel=1e-5)
    assert ev["acc"] == pytest.approx(100 * float((logits.argmax(1).numpy() == y).mean()))
