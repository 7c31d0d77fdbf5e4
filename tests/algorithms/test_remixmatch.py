"""ReMixMatch's step on a batch small enough to work out by hand (network: logits = the first pixel row)."""
import math

import pytest
import torch

from fixmatch_ray.algorithms import ReMixMatch, StepInput, Views, build_algorithm
from fixmatch_ray.algorithms.base import LOCAL, Context
from fixmatch_ray.algorithms.remixmatch import ReMixMatchOptions, guess_probs
from stepnets import Recorder  # tests/ is on the path (its conftest)

CPU = torch.device("cpu")


def _net():
    return Recorder(lambda x: x[:, 0, 0, :], {"rotation": lambda x: torch.zeros(len(x), 4)})


class NoMix:
    """λ = 1 and the identity permutation: MixUp leaves every row as it is."""

    def __call__(self, n, beta, collective, device):
        return torch.ones(n), torch.arange(n)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        assert state == {}


def _img(a, b, below=None):
    """A 2x2 image of rows (a b) and ``below`` (default (a b)): the recorder's logits are its first row."""
    return torch.tensor([[[[a, b], list(below or (a, b))]]])


def _algo(**kw):
    opts = ReMixMatchOptions(K=2, dbuf=2, warmup_kimg=64 / 1024, **kw)  # warm-up: 64 steps at B = 1
    algo = build_algorithm("remixmatch", opts, Context(2, 10, CPU, total_steps=100, batch_size=1))
    algo.draws = NoMix()
    return algo


def _batch(step):
    weak, s1, s2 = _img(math.log(3), 0.0), _img(math.log(3), 0.0, (7.0, 8.0)), _img(0.0, 0.0)
    return StepInput((_img(0.0, 0.0),), torch.tensor([0]), (weak, s1, s2), torch.tensor([4]), step=step)


def test_call_pattern_rotation_kl_and_alignment_state():
    algo, net = _algo(), _net()
    loss, m = algo.train_step(net, _batch(16), LOCAL)
    # rotation of the first strong view on the rotation head, the anchor and the first strong view
    # (redux 1st with w_kl > 0), then four interleaved calls of which only the last updates BatchNorm
    assert [c[2] for c in net.calls] == ["rotation", None, None, None, None, None, None]
    assert [c[1] for c in net.calls] == [False, False, False, False, False, False, True]
    rotated, _ = net.calls[0][0], None
    # B = 1: the first strong view, turned clockwise (the last quarter's rotation)
    assert torch.equal(rotated, torch.tensor([[[[7.0, math.log(3)], [8.0, 0.0]]]]))
    assert m["loss_rot"].item() == pytest.approx(math.log(4))
    # the guess: softmax(anchor) = (.75 .25); p_data and p_model start uniform, so alignment is the
    # identity; sharpened by T = .5: (.9 .1), every view's target (redux 1st)
    t = [0.9, 0.1]
    kl = -(t[0] * math.log(0.75) + t[1] * math.log(0.25))
    assert m["loss_kl"].item() == pytest.approx(kl, rel=1e-5)
    # unmixed: the labeled row (0 0) against its one-hot label; the views against t
    loss_u = (2 * kl + -(t[0] * math.log(0.5) + t[1] * math.log(0.5))) / 3
    assert m["loss_x"].item() == pytest.approx(math.log(2), rel=1e-5)
    assert m["loss_u"].item() == pytest.approx(loss_u, rel=1e-5)
    ramp = 16 / 64
    assert loss.item() == pytest.approx(math.log(2) + 0.5 * ramp * kl + 1.5 * ramp * loss_u + 0.5 * math.log(4),
                                        rel=1e-5)
    # after the step: the moving average holds the batch mean of the guess, p_data moved to the label
    state = algo.state_dict()
    assert torch.allclose(state["p_model"], torch.tensor([[0.5, 0.5], [0.75, 0.25]]))
    assert torch.allclose(state["p_data"], torch.tensor([0.5 * 0.999 + 0.001, 0.5 * 0.999]))

    # the next step aligns: p · p_data / p_model, p_model = mean of the two rows (.625 .375)
    _, m2 = algo.train_step(_net(), _batch(17), LOCAL)
    pd, pm = (0.5 * 0.999 + 0.001, 0.5 * 0.999), (0.625, 0.375)
    a = [0.75 * (1e-6 + pd[0]) / (1e-6 + pm[0]), 0.25 * (1e-6 + pd[1]) / (1e-6 + pm[1])]
    a = [v / sum(a) for v in a]
    t2 = [a[0] ** 2 / (a[0] ** 2 + a[1] ** 2), a[1] ** 2 / (a[0] ** 2 + a[1] ** 2)]
    assert m2["loss_kl"].item() == pytest.approx(-(t2[0] * math.log(0.75) + t2[1] * math.log(0.25)), rel=1e-5)


def test_state_round_trips_and_checks_its_shape():
    algo = _algo()
    algo.train_step(_net(), _batch(3), LOCAL)
    other = _algo()
    other.load_state_dict(algo.state_dict())
    assert torch.equal(other.p_model.buffer, algo.p_model.buffer) and torch.equal(other.p_data, algo.p_data)
    with pytest.raises(ValueError, match=r"\(2, 2\) moving average, this run needs \(128, 2\)"):
        build_algorithm("remixmatch", ReMixMatchOptions(), Context(2, 10, CPU)).load_state_dict(algo.state_dict())


def test_redux_swap_takes_each_target_from_the_next_view():
    la, lb, lc = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]]), torch.tensor([[0.0, math.log(3)]])
    assert torch.allclose(guess_probs([la, lb, lc], "swap"), torch.tensor([[0.75, 0.25], [0.25, 0.75], [0.5, 0.5]]))
    assert torch.allclose(guess_probs([la, lb, lc], "1st"), torch.tensor([[0.5, 0.5]] * 3))
    assert torch.allclose(guess_probs([lb, lc], "mean"), torch.tensor([[0.5, 0.5]] * 2))


def test_defaults_views_and_heads():
    o = ReMixMatchOptions()
    assert (o.K, o.beta, o.T, o.w_kl, o.w_match, o.w_rot, o.warmup_kimg, o.redux, o.dbuf) == (
        8, 0.75, 0.5, 0.5, 1.5, 0.5, 1024.0, "1st", 128)
    assert ReMixMatch.views(o) == Views(("strong",), ("weak",) + ("strong",) * 8)
    assert ReMixMatch.views(ReMixMatchOptions(K=1, labeled_view="weak")) == Views(("weak",), ("weak", "strong"))
    assert ReMixMatch.heads(o) == {"rotation": 4} and ReMixMatch.heads(ReMixMatchOptions(w_rot=0)) == {}
