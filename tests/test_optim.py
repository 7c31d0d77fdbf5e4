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
