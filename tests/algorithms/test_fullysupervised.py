"""The fully supervised reference (official fs_baseline.py): smoothed cross-entropy by hand, every label."""
from __future__ import annotations

import math

import pytest
import torch

from fixmatch_ray.algorithms import Context, FullySupervised, StepInput
from handmath import forward  # noqa: F401 - the fixture
from fixmatch_ray.config import RunConfig
from fixmatch_ray.errors import ConfigError


def test_loss_is_cross_entropy_against_smoothed_labels_by_hand(forward):
    logits, y, s = [[3.0, 0.0, 1.0]], [2], 0.1
    target = [(1.0 if c == y[0] else 0.0) - s * ((1.0 if c == y[0] else 0.0) - 1 / 3) for c in range(3)]
    log_z = math.log(sum(math.exp(v) for v in logits[0]))
    expected = -sum(t * (v - log_z) for t, v in zip(target, logits[0]))
    algo = FullySupervised(FullySupervised.Options(smoothing=s), Context(3, 10, torch.device("cpu")))
    batch = StepInput((torch.tensor(logits),), torch.tensor(y), (torch.zeros(1, 3),), torch.arange(1), 0)
    loss, m = algo.train_step(forward, batch, None)
    assert loss.item() == pytest.approx(expected, rel=1e-6) and forward.calls == [(1, True)]


def test_trains_on_every_training_label():
    assert FullySupervised.Options().smoothing == 0.001
    cfg = RunConfig.from_dict({"algorithm": "fullysupervised", "dataset": "digits"})
    assert cfg.num_labeled == 1433  # digits' training images
    with pytest.raises(ConfigError, match="every training label, 1433 on digits; got 50"):
        RunConfig.from_dict({"algorithm": "fullysupervised", "dataset": "digits", "num_labeled": 50})
