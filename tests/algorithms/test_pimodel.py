"""Π-Model (official pi_model.py): its loss by hand, the warm-up, the teacher, BatchNorm from the labeled call."""
from __future__ import annotations

import pytest
import torch

from handmath import cross_entropy, softmax, forward  # noqa: F401 - the fixture
from fixmatch_ray.algorithms import Context, PiModel, StepInput
from fixmatch_ray.config import RunConfig

X_LB = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
Y_LB = [0, 2]
U1 = [[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]]  # the teacher's view
U2 = [[0.0, 1.0, 0.0], [0.0, 2.0, 1.0]]  # the student's view


def by_hand(u_teacher, u_student) -> tuple[float, float]:
    loss_x = sum(cross_entropy(r, y) for r, y in zip(X_LB, Y_LB)) / len(X_LB)
    per_image = [sum((a - b) ** 2 for a, b in zip(softmax(t), softmax(s))) / 3  # mean over classes
                 for t, s in zip(u_teacher, u_student)]
    return loss_x, sum(per_image) / len(per_image)  # then over images


def batch(step: int = 0, **kw) -> StepInput:
    t = lambda v: torch.tensor(v, requires_grad=True)  # noqa: E731
    return StepInput((t(X_LB),), torch.tensor(Y_LB), (t(U1), t(U2)), torch.arange(2), step, **kw)


def pimodel(total_steps: int = 1000, **options) -> PiModel:
    return PiModel(PiModel.Options(**options), Context(3, 10, torch.device("cpu"), total_steps))


def test_defaults_and_views_are_the_official_script():
    o = PiModel.Options()
    assert (o.consistency_weight, o.warmup_pos) == (10.0, 0.4)
    assert PiModel.views(o).unlabeled == ("weak", "weak") and PiModel.mu == 1
    cfg = RunConfig.from_dict({"algorithm": "pimodel", "dataset": "digits", "num_labeled": 50})
    assert cfg.unlabeled_batch_size == cfg.batch_size == 64  # B unlabeled images, not 7B


def test_loss_is_squared_softmax_difference_by_hand(forward):
    loss_x, loss_u = by_hand(U1, U2)
    loss, m = pimodel().train_step(forward, batch(step=1000), None)  # past the warm-up: weight 10
    assert m["loss_x"].item() == pytest.approx(loss_x, rel=1e-6)
    assert m["loss_u"].item() == pytest.approx(loss_u, rel=1e-6)
    assert loss.item() == pytest.approx(loss_x + 10 * loss_u, rel=1e-6)


@pytest.mark.parametrize("fraction, ramp", [(0.0, 0.0), (0.2, 0.5), (0.4, 1.0), (1.0, 1.0)])
def test_warmup_reaches_full_weight_at_0_4_of_training(forward, fraction, ramp):
    loss_x, loss_u = by_hand(U1, U2)
    loss, m = pimodel(total_steps=1000).train_step(forward, batch(step=int(fraction * 1000)), None)
    assert m["warmup"].item() == ramp
    assert loss.item() == pytest.approx(loss_x + 10 * ramp * loss_u, rel=1e-6)


def test_teacher_is_the_model_without_gradient_and_only_the_labeled_call_moves_bn(forward):
    b = batch(step=1000)
    loss, _ = pimodel().train_step(forward, b, None)
    loss.backward()
    assert forward.calls == [(2, True), (2, False), (2, False)]  # labeled, teacher, student
    assert b.x_ulb[0].grad is None or torch.all(b.x_ulb[0].grad == 0)  # the target is a constant
    assert b.x_ulb[1].grad.abs().sum() > 0


def test_engine_updates_batchnorm_from_the_labeled_batch_only(tmp_path):
    """A real step of the engine's Forward: BatchNorm's running statistics after a Π-Model step
    are those of the labeled batch alone (the unlabeled calls pass update_bn=False)."""
    from fixmatch_ray.training.engine import Engine

    cfg = RunConfig.from_dict({"algorithm": "pimodel", "dataset": "digits", "num_labeled": 20, "depth": 10,
                               "width": 1, "batch_size": 4, "total_steps": 10, "seed": 3, "device": "cpu",
                               "out": str(tmp_path)})
    trainer = Engine(cfg, torch.device("cpu"), num_unlabeled=100)
    reference = Engine(cfg, torch.device("cpu"), num_unlabeled=100).net.train()
    g = torch.Generator().manual_seed(0)
    x_lb, u1, u2 = (torch.randn(4, 3, 32, 32, generator=g) for _ in range(3))
    trainer.train_step({"x_lb": [x_lb], "y_lb": torch.tensor([0, 1, 2, 3]), "x_ulb": [u1, u2],
                        "idx_ulb": torch.arange(4)})
    with torch.no_grad():
        reference(x_lb.contiguous(memory_format=torch.channels_last))
    bn = lambda net: [b for n, b in net.named_buffers() if "running" in n]  # noqa: E731
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(bn(trainer.net), bn(reference), strict=True))
