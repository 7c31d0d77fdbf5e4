import math

import pytest
import torch
from torch import nn

from fixmatch_ray.training.optim import ModelEMA, build_optimizer, lr_at, param_groups


def test_cosine_schedule_hand_computed():
    K = 1000
    assert lr_at(0, 0.03, K) == pytest.approx(0.03)
    assert lr_at(K // 2, 0.03, K) == pytest.approx(0.03 * math.cos(7 * math.pi / 32))
    assert lr_at(K, 0.03, K) == pytest.approx(0.03 * math.cos(7 * math.pi / 16))  # ~0.195 lr
    assert lr_at(K, 1.0, K) == pytest.approx(0.19509, abs=1e-5)


def test_warmup_then_cosine():
    assert lr_at(0, 0.1, 110, warmup=10) == 0.0
    assert lr_at(5, 0.1, 110, warmup=10) == pytest.approx(0.05)
    assert lr_at(10, 0.1, 110, warmup=10) == pytest.approx(0.1)
    assert lr_at(60, 0.1, 110, warmup=10) == pytest.approx(0.1 * math.cos(7 * math.pi / 32))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.norm = nn.BatchNorm2d(4)  # not named "bn": recognised by type
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.bn1(self.norm(self.conv(x))).mean((2, 3)))


def test_param_groups_no_decay_on_bias_and_bn():
    net = Net()
    decay, no_decay = param_groups(net, 5e-4)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == {id(net.conv.weight), id(net.fc.weight)}
    assert ids(no_decay["params"]) == ids([net.norm.weight, net.norm.bias, net.bn1.weight, net.bn1.bias, net.fc.bias])
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0


def test_sgd_nesterov_step_matches_hand_computation():
    p = nn.Parameter(torch.tensor([1.0]))
    model = nn.Module()
    model.w = p
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5, momentum=0.9, nesterov=True)
    for _ in range(2):
        opt.zero_grad()
        (2 * p).sum().backward()  # grad 2
        opt.step()
    # step 1: g = 2 + 0.5*1 = 2.5; buf = 2.5; d = g + 0.9 buf = 4.75; p = 1 - 0.475 = 0.525
    # step 2: g = 2 + 0.5*0.525 = 2.2625; buf = 0.9*2.5 + 2.2625 = 4.5125; d = 2.2625 + 0.9*4.5125
    d2 = 2.2625 + 0.9 * 4.5125
    assert p.item() == pytest.approx(0.525 - 0.1 * d2, rel=1e-6)


def test_ema_hand_computed_and_buffers_copied():
    net = nn.BatchNorm1d(1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = ModelEMA(net, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.running_mean.fill_(7.0)
    ema.update(net)
    assert ema.module.weight.item() == pytest.approx(0.9 * 1 + 0.1 * 3)  # 1.2
    assert ema.module.running_mean.item() == 7.0  # copied, not averaged
    ema.update(net)
    assert ema.module.weight.item() == pytest.approx(0.9 * 1.2 + 0.1 * 3)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_round_trip():
    net = nn.Linear(3, 2)
    ema = ModelEMA(net, 0.99)
    ema.update(net)
    other = ModelEMA(nn.Linear(3, 2), 0.99)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), other.module.parameters()))
    with pytest.raises(ValueError, match="1.5"):
        ModelEMA(net, 1.5)


def test_ema_copies_buffers_when_read_not_every_step(monkeypatch):
    """update() is one lerp of the parameters; the buffers (float statistics and the int64 batch
    count) are copied when the EMA model is read, one foreach copy per dtype, and are then the
    model's latest."""
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(net, 0.9)
    calls = []
    real = torch._foreach_copy_
    monkeypatch.setattr(torch, "_foreach_copy_", lambda dst, src: calls.append([t.dtype for t in dst]) or real(dst, src))
    for _ in range(3):
        net.train()(torch.randn(4, 2))  # moves the running statistics and the batch count
        ema.update(net)
    assert calls == []
    bn = ema.module[1]
    assert sorted(map(str, calls)) == ["[torch.float32, torch.float32]", "[torch.int64]"]
    assert torch.equal(bn.running_mean, net[1].running_mean) and int(bn.num_batches_tracked) == 3
    assert torch.equal(ema.state_dict()["1.running_var"], net[1].running_var)


# -- the official optimiser and schedule ablations ---------------------------------------------------
def test_linear_schedule_hand_computed():
    """ab_fixmatch_linearlr: lr + (lr_end - lr)·clip(k/K, 0, 1)."""
    K = 1000
    assert [lr_at(k, 0.03, K, schedule="linear", lr_end=0.02) for k in (0, 250, 500, 1000)] == pytest.approx(
        [0.03, 0.0275, 0.025, 0.02])
    assert lr_at(400, 0.03, K, schedule="linear", lr_end=0.0) == pytest.approx(0.018)
    assert lr_at(5, 0.1, 110, warmup=10, schedule="linear") == pytest.approx(0.05)  # warmup first, as cosine
    assert lr_at(60, 0.1, 110, warmup=10, schedule="linear", lr_end=0.0) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="unknown lr schedule 'step'"):
        lr_at(0, 0.1, 10, schedule="step")


def test_engine_schedules_follow_the_config():
    from fixmatch_ray.config import RunConfig
    from fixmatch_ray.training.engine import schedule_lr

    cos = RunConfig(total_steps=100)
    assert schedule_lr(cos, 50) == lr_at(50, 0.03, 100)  # the default: the very same number
    lin = RunConfig(total_steps=100, lr_schedule="linear").resolved()
    assert lin.lr_end == 0.02 and schedule_lr(lin, 50) == pytest.approx(0.025)
    assert schedule_lr(RunConfig(total_steps=100, lr_schedule="linear", lr_end=0.0), 100) == 0.0


def _one_weight(value: float) -> nn.Module:
    model = nn.Module()
    model.w = nn.Parameter(torch.tensor([value]))
    return model


def test_tf_adam_steps_hand_computed():
    """TF1 Adam, ε on the uncorrected √v: two steps of a constant gradient 2 plus decay 0.5·w."""
    model = _one_weight(1.0)
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5, optimizer="adam", betas=(0.9, 0.999))
    from fixmatch_ray.training.optim import TFAdam

    assert isinstance(opt, TFAdam) and [g["eps"] for g in opt.param_groups] == [1e-8, 1e-8]
    w, m, v, b1, b2 = 1.0, 0.0, 0.0, 0.9, 0.999
    for t in (1, 2):
        opt.zero_grad()
        (2 * model.w).sum().backward()
        opt.step()
        g = 2 + 0.5 * w
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        w -= 0.1 * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (math.sqrt(v) + 1e-8)
        assert model.w.item() == pytest.approx(w, rel=1e-6)
    # step 1 by hand: g = 2.5, m = 0.25, v = 0.00625; lr_t = 0.1·√0.001/0.1; w = 1 − 0.1 = 0.9
    assert 1.0 - 0.1 * math.sqrt(0.001) / 0.1 * 0.25 / math.sqrt(0.00625) == pytest.approx(0.9)


def test_tf_adam_eps_rule_and_its_difference_from_torch():
    """β2 = 0 takes ε = 1e-4 (the official rule): the step is lr·m/(|g| + ε), exactly. With a tiny
    gradient the place of ε matters: TF's ε on the uncorrected √v moves less than torch's."""
    model = _one_weight(0.0)
    opt = build_optimizer(model, lr=1.0, weight_decay=0.0, optimizer="adam", betas=(0.9, 0.0))
    assert opt.param_groups[0]["eps"] == 1e-4
    model.w.grad = torch.tensor([1e-4])
    opt.step()  # m = 1e-5, v = 1e-8, lr_t = 1/(1 - 0.9) = 10: step = 10·1e-5/(1e-4 + 1e-4) = 0.5
    assert model.w.item() == pytest.approx(-0.5, rel=1e-5)

    tf, ref = _one_weight(0.0), _one_weight(0.0)
    opt_tf = build_optimizer(tf, lr=1.0, weight_decay=0.0, optimizer="adam")
    opt_torch = torch.optim.Adam(ref.parameters(), lr=1.0, eps=1e-8)
    for mod, o in ((tf, opt_tf), (ref, opt_torch)):
        mod.w.grad = torch.tensor([1e-9])
        o.step()
    # m = 1e-10, v = 1e-21. TF: √0.001/0.1 · 1e-10/(√1e-21 + 1e-8) = 0.00315;
    # torch: 1/0.1 · 1e-10/(√1e-21/√0.001 + 1e-8) = 10 · 1e-10/1.1e-8 = 0.0909
    assert tf.w.item() == pytest.approx(-math.sqrt(0.001) / 0.1 * 1e-10 / (math.sqrt(1e-21) + 1e-8), rel=1e-4)
    assert abs(tf.w.item()) < abs(ref.w.item()) / 5


def test_adam_skips_decay_on_bias_and_bn_and_keeps_state_round_trip():
    net = Net()
    opt = build_optimizer(net, lr=0.002, weight_decay=5e-4, optimizer="adam")
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    x = torch.randn(2, 3, 6, 6)
    net(x).sum().backward()
    opt.step()
    again = build_optimizer(Net(), lr=0.002, weight_decay=5e-4, optimizer="adam")
    again.load_state_dict(opt.state_dict())
    s = next(iter(again.state.values()))
    assert s["step"] == 1 and set(s) == {"step", "exp_avg", "exp_avg_sq"}
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        build_optimizer(net, lr=0.1, weight_decay=0.0, optimizer="rmsprop")


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.5, False), (0.5, True)])
def test_sgd_momentum_and_nesterov_hand_computed(momentum, nesterov):
    """ab_fixmatch_momentum (TF MomentumOptimizer): accum = m·accum + g; step g + m·accum with
    Nesterov, accum without. Constant gradient 1, lr 0.1, two steps, no decay."""
    model = _one_weight(0.0)
    opt = build_optimizer(model, lr=0.1, weight_decay=0.0, momentum=momentum, nesterov=nesterov)
    w, acc = 0.0, 0.0
    for _ in range(2):
        model.w.grad = torch.tensor([1.0])
        opt.step()
        acc = momentum * acc + 1.0
        w -= 0.1 * ((1.0 + momentum * acc) if nesterov else acc)
        assert model.w.item() == pytest.approx(w, rel=1e-6)
