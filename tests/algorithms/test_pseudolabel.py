"""Pseudo-Labeling (official pseudo_label.py): the broadcast loss by hand, the strict mask, the warm-up."""
from __future__ import annotations

import pytest
import torch

from handmath import cross_entropy, softmax, forward  # noqa: F401 - the fixture
from fixmatch_ray.algorithms import Context, PseudoLabel, StepInput

X_LB = [[1.0, 0.0, 0.0]]
Y_LB = [1]
# image 0 confident (max softmax ~0.9999), image 1 not, image 2 exactly at τ for the threshold test
U = [[10.0, 0.0, 0.0], [0.3, 0.2, 0.1], [0.0, 0.0, 0.0]]


def algo(total_steps: int = 1000, **options) -> PseudoLabel:
    return PseudoLabel(PseudoLabel.Options(**options), Context(3, 10, torch.device("cpu"), total_steps))


def batch(u, step: int = 1000) -> StepInput:
    return StepInput((torch.tensor(X_LB),), torch.tensor(Y_LB), (torch.tensor(u, requires_grad=True),),
                     torch.arange(len(u)), step)


def test_defaults_are_the_official_script():
    o = PseudoLabel.Options()
    assert (o.consistency_weight, o.threshold, o.warmup_pos) == (1.0, 0.95, 0.4)
    assert PseudoLabel.views(o).unlabeled == ("weak",) and PseudoLabel.mu == 1


def test_loss_is_mean_ce_times_mean_mask_the_official_broadcast(forward):
    """[B, 1] mask × [B] CE → [B, B]: mean = mean(CE)·mean(mask), the non-confident images'
    CE included — not mean(mask·CE)."""
    ce = [cross_entropy(r, max(range(3), key=r.__getitem__)) for r in U]
    mask = [float(max(softmax(r)) > 0.95) for r in U]
    assert mask == [1.0, 0.0, 0.0]
    loss, m = algo().train_step(forward, batch(U), None)
    official = sum(mask[i] * ce[j] for i in range(3) for j in range(3)) / 9
    assert m["loss_u"].item() == pytest.approx(official, rel=1e-6)
    assert m["loss_u"].item() != pytest.approx(sum(a * b for a, b in zip(mask, ce)) / 3, rel=1e-3)
    assert m["mask"].item() == pytest.approx(1 / 3)
    assert loss.item() == pytest.approx(cross_entropy(X_LB[0], 1) + official, rel=1e-6)
    assert forward.calls == [(1, True), (3, False)]  # BatchNorm moves with the labeled call only


def test_mask_is_strict():
    same = lambda x, update_bn=True: x.float()  # noqa: E731
    _, m = algo(threshold=0.5).train_step(same, batch([[0.0, 0.0]]), None)  # softmax exactly 0.5
    assert m["mask"].item() == 0.0  # max softmax == τ is not confident (tf.greater)
    _, m = algo(threshold=0.4999).train_step(same, batch([[0.0, 0.0]]), None)
    assert m["mask"].item() == 1.0


def test_pseudo_label_comes_from_the_trained_pass(forward):
    b = batch(U)
    loss, _ = algo().train_step(forward, b, None)
    loss.backward()
    assert b.x_ulb[0].grad.abs().sum() > 0  # the same pass is both target and trained


@pytest.mark.parametrize("fraction, ramp", [(0.0, 0.0), (0.2, 0.5), (0.4, 1.0), (1.0, 1.0)])
def test_warmup(forward, fraction, ramp):
    loss, m = algo(total_steps=500).train_step(forward, batch(U, step=int(fraction * 500)), None)
    assert m["warmup"].item() == ramp
    assert loss.item() == pytest.approx(m["loss_x"].item() + ramp * m["loss_u"].item(), rel=1e-6)
