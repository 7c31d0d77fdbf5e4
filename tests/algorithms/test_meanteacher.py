"""Mean Teacher (official mean_teacher.py): the EMA weights in training mode as teacher, loss by hand, warm-up."""
from __future__ import annotations

import pytest
import torch

from handmath import cross_entropy, softmax, forward  # noqa: F401 - the fixture
from fixmatch_ray.algorithms import Context, MeanTeacher, StepInput
from fixmatch_ray.config import RunConfig
from fixmatch_ray.errors import ConfigError

X_LB = [[0.0, 1.0]]
Y_LB = [0]
U1 = [[1.0, 0.0], [0.0, 0.0]]
U2 = [[0.0, 1.0], [2.0, 0.0]]
EMA_SHIFT = 0.5  # the stand-in EMA model: logits + 0.5 on class 0, so model ≠ EMA


class EMA:
    def __init__(self):
        self.calls = []

    def __call__(self, x, train=False):
        self.calls.append(train)
        return x.detach() + torch.tensor([EMA_SHIFT, 0.0])


def algo(total_steps: int = 100) -> MeanTeacher:
    return MeanTeacher(MeanTeacher.Options(), Context(2, 10, torch.device("cpu"), total_steps))


def batch(step: int, ema) -> StepInput:
    return StepInput((torch.tensor(X_LB),), torch.tensor(Y_LB), (torch.tensor(U1), torch.tensor(U2)),
                     torch.arange(2), step, ema_forward=ema)


def by_hand() -> float:
    teacher = [[v + (EMA_SHIFT if c == 0 else 0.0) for c, v in enumerate(r)] for r in U1]
    per_image = [sum((a - b) ** 2 for a, b in zip(softmax(t), softmax(s))) / 2 for t, s in zip(teacher, U2)]
    return sum(per_image) / 2


def test_defaults_are_the_official_script():
    o = MeanTeacher.Options()
    assert (o.consistency_weight, o.warmup_pos) == (50.0, 0.4) and MeanTeacher.mu == 1
    assert RunConfig.from_dict({"algorithm": "meanteacher", "dataset": "digits", "num_labeled": 20}).ema_decay == 0.999
    with pytest.raises(ConfigError, match="use_ema"):
        RunConfig.from_dict({"algorithm": "meanteacher", "dataset": "digits", "num_labeled": 20, "use_ema": False})


def test_teacher_is_the_ema_model_in_training_mode_and_loss_by_hand(forward):
    ema = EMA()
    loss, m = algo().train_step(forward, batch(100, ema), None)
    assert ema.calls == [True]  # training=True, getter=ema_getter: batch statistics
    assert forward.calls == [(1, True), (2, False)]  # labeled (moves BN), student
    assert m["loss_u"].item() == pytest.approx(by_hand(), rel=1e-6)
    assert loss.item() == pytest.approx(cross_entropy(X_LB[0], 0) + 50 * by_hand(), rel=1e-6)


@pytest.mark.parametrize("fraction, ramp", [(0.0, 0.0), (0.2, 0.5), (0.4, 1.0), (1.0, 1.0)])
def test_warmup(forward, fraction, ramp):
    loss, m = algo(total_steps=100).train_step(forward, batch(int(fraction * 100), EMA()), None)
    assert m["warmup"].item() == ramp
    assert loss.item() == pytest.approx(cross_entropy(X_LB[0], 0) + 50 * ramp * by_hand(), rel=1e-6)


def test_engine_teacher_is_ema_weights_with_batch_statistics(tmp_path):
    """Through the engine: the teacher's logits equal the EMA module's in train mode, not the
    model's and not the EMA's in eval mode."""
    from fixmatch_ray.training.engine import Engine

    cfg = RunConfig.from_dict({"algorithm": "meanteacher", "dataset": "digits", "num_labeled": 20, "depth": 10,
                               "width": 1, "batch_size": 4, "total_steps": 10, "seed": 3, "device": "cpu",
                               "ema_decay": 0.5, "out": str(tmp_path)})
    trainer = Engine(cfg, torch.device("cpu"), num_unlabeled=100)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 32, generator=g)
    step = {"x_lb": [x], "y_lb": torch.tensor([0, 1, 2, 3]), "x_ulb": [x, x], "idx_ulb": torch.arange(4)}
    trainer.train_step(step)  # the EMA now differs from the model
    seen = []
    trainer.algorithm.teacher = lambda fwd, b: seen.append(b.ema_forward(b.x_ulb[0], train=True)) or seen[-1]
    expected = trainer._ema_forward(x, train=True)
    trainer.train_step(step)
    assert torch.equal(seen[0], expected)
    assert not torch.allclose(expected, trainer._ema_forward(x, train=False))
