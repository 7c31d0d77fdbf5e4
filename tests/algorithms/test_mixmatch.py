"""MixMatch's step on a batch small enough to work out by hand (identity network: logits = pixels)."""
import math

import pytest
import torch

from fixmatch_ray.algorithms import Context, StepInput, build_algorithm
from fixmatch_ray.algorithms.base import LOCAL
from fixmatch_ray.algorithms.mixmatch import MixMatchOptions, kimg_steps
from stepnets import Recorder  # tests/ is on the path (its conftest)

CPU = torch.device("cpu")


class FixedDraws:
    def __init__(self, lam, index):
        self.lam, self.index = torch.tensor(lam), torch.tensor(index)

    def __call__(self, n, beta, collective, device):
        assert n == len(self.lam)
        return self.lam, self.index


def _img(a, b):
    return torch.tensor([[[[a, b]]]])


def test_step_matches_the_hand_computed_loss_and_call_pattern():
    # 64 images of warm-up at B = 1: 64 steps; step 16 is a quarter of the way
    opts = MixMatchOptions(warmup_kimg=64 / 1024)
    algo = build_algorithm("mixmatch", opts, Context(2, 10, CPU, total_steps=100, batch_size=1))
    algo.draws = FixedDraws([0.9, 0.2, 0.5], [1, 0, 0])  # λ' = .9, .8, .5
    x, y1, y2 = _img(0.0, 0.0), _img(math.log(3), 0.0), _img(0.0, 0.0)
    net = Recorder(lambda x: x.flatten(1))  # the identity on a (N, 1, 1, 2) batch
    batch = StepInput((x,), torch.tensor([0]), (y1, y2), torch.tensor([3]), step=16)
    loss, m = algo.train_step(net, batch, LOCAL)

    # the guess: mean of softmax (.75 .25) and (.5 .5) = (.625 .375), sharpened by T = .5
    g0, g1 = 0.625 ** 2, 0.375 ** 2
    g = [g0 / (g0 + g1), g1 / (g0 + g1)]
    # mixed rows: row0 = .9 x + .1 y1, row1 = .8 y1 + .2 x, row2 = .5 y2 + .5 x
    l0 = [0.9 * 1 + 0.1 * g[0], 0.1 * g[1]]
    l1 = [0.8 * g[0] + 0.2, 0.8 * g[1]]
    l2 = [0.5 * g[0] + 0.5, 0.5 * g[1]]

    def softmax(a):
        e = [math.exp(a), 1.0]
        return [e[0] / sum(e), e[1] / sum(e)]

    p0, p1, p2 = softmax(0.1 * math.log(3)), softmax(0.8 * math.log(3)), softmax(0.0)
    loss_x = -(l0[0] * math.log(p0[0]) + l0[1] * math.log(p0[1]))
    loss_u = sum((t - p) ** 2 for ls, ps in ((l1, p1), (l2, p2)) for t, p in zip(ls, ps)) / 4
    assert m["loss_x"].item() == pytest.approx(loss_x, rel=1e-5)
    assert m["loss_u"].item() == pytest.approx(loss_u, rel=1e-5)
    assert m["w_match"].item() == pytest.approx(25.0)
    assert loss.item() == pytest.approx(loss_x + 25.0 * loss_u, rel=1e-5)

    # two guess calls, one per view, then the three interleaved calls: only the first updates BatchNorm
    assert [c[1] for c in net.calls] == [False, False, True, False, False]
    assert torch.equal(net.calls[0][0], y1) and torch.equal(net.calls[1][0], y2)
    # B = 1, two views: offsets [0, 0, 0, 1], so the first call gets the last batch's row (row 2)
    assert torch.allclose(net.calls[2][0], 0.5 * y2 + 0.5 * x)
    assert torch.allclose(net.calls[4][0], 0.9 * x + 0.1 * y1)


def test_views_defaults_and_warmup_in_images():
    from fixmatch_ray.algorithms import MixMatch, Views

    o = MixMatchOptions()
    assert (o.nu, o.T, o.beta, o.w_match, o.warmup_kimg) == (2, 0.5, 0.5, 100.0, 1024.0)
    assert MixMatch.views(o) == Views(("weak",), ("weak", "weak"))
    assert MixMatch.views(MixMatchOptions(nu=4)).unlabeled == ("weak",) * 4
    assert kimg_steps(1024, 64) == 16384  # 2^20 images at 64 a step


def test_mixup_draws_follow_the_seed_and_round_trip_through_state():
    algo = build_algorithm("mixmatch", MixMatchOptions(), Context(2, 10, CPU, seed=5))
    other = build_algorithm("mixmatch", MixMatchOptions(), Context(2, 10, CPU, seed=5))
    third = build_algorithm("mixmatch", MixMatchOptions(), Context(2, 10, CPU, seed=6))
    a = algo.draws(6, 0.5, LOCAL, CPU)
    state = algo.state_dict()
    b = algo.draws(6, 0.5, LOCAL, CPU)
    other.load_state_dict(state)
    c = other.draws(6, 0.5, LOCAL, CPU)
    assert torch.equal(b[0], c[0]) and torch.equal(b[1], c[1])
    assert not torch.equal(a[0], b[0])
    assert not torch.equal(third.draws(6, 0.5, LOCAL, CPU)[0], a[0])
    assert sorted(a[1].tolist()) == list(range(6)) and ((a[0] >= 0) & (a[0] <= 1)).all()
