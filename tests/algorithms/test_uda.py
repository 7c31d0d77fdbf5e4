"""UDA's step on a batch small enough to work out by hand (identity network: logits = features)."""
import math

import pytest
import torch

from fixmatch_ray.algorithms import UDA, Context, StepInput, Views, build_algorithm
from fixmatch_ray.algorithms.base import LOCAL
from fixmatch_ray.algorithms.uda import UDAOptions, tsa_progress

CPU = torch.device("cpu")


def _row(*rows):
    return torch.tensor(rows).view(len(rows), 1, 1, 2)


def _step(opts, step):
    calls = []

    def net(x, *, update_bn=True, head=None):
        calls.append((len(x), update_bn))
        return x.flatten(1)

    algo = build_algorithm("uda", opts, Context(2, 10, CPU, total_steps=1024, batch_size=1))
    batch = StepInput((_row([math.log(9), 0.0]),), torch.tensor([0]),
                      (_row([math.log(39), 0.0], [0.0, 0.0]), _row([0.0, 0.0], [math.log(3), 0.0])),
                      torch.tensor([1, 2]), step=step)
    loss, m = algo.train_step(net, batch, LOCAL)
    assert calls == [(5, True)]  # one call over labeled, weak and strong: BatchNorm sees all three
    return loss, m


def _h(p):
    return -sum(q * math.log(q) for q in p)


def test_masked_kl_entropy_and_plain_cross_entropy():
    loss, m = _step(UDAOptions(we=0.5), step=1)
    kl = 0.975 * math.log(0.975 / 0.5) + 0.025 * math.log(0.025 / 0.5)  # only the first weak view is confident
    entropy = (_h([0.975, 0.025]) + math.log(2)) / 2
    assert m["mask"].item() == 0.5
    assert m["loss_u"].item() == pytest.approx(kl / 2, rel=1e-5)
    assert m["entropy"].item() == pytest.approx(entropy, rel=1e-5)
    assert m["loss_x"].item() == pytest.approx(-math.log(0.9), rel=1e-5)
    assert loss.item() == pytest.approx(-math.log(0.9) + kl / 2 + 0.5 * entropy, rel=1e-5)


def test_temperature_sharpens_the_target_not_the_mask():
    _, m = _step(UDAOptions(temperature=0.5, confidence=0.95), step=1)
    p = [39 ** 2 / (39 ** 2 + 1), 1 / (39 ** 2 + 1)]  # softmax(weak / 0.5)
    kl = p[0] * math.log(p[0] / 0.5) + p[1] * math.log(p[1] / 0.5)
    assert m["mask"].item() == 0.5 and m["loss_u"].item() == pytest.approx(kl / 2, rel=1e-5)
    # at 0.98 the plain softmax (.975) is not confident, however sharp the target
    _, m = _step(UDAOptions(temperature=0.5, confidence=0.98), step=1)
    assert m["mask"].item() == 0.0 and m["loss_u"].item() == 0.0


def test_tsa_drops_the_labeled_sample_above_the_threshold():
    # B = 1, a 1-kimg run, tsa_pos 2: the schedule spans min(1, 2^14) << 2 = 4 images; step 1 is 1/4 of it
    assert tsa_progress(1, 1, 1.0, 2) == pytest.approx(0.25)
    _, m = _step(UDAOptions(tsa="linear", tsa_pos=2), step=1)  # threshold .25*.5 + .5 = .625 < p .9
    assert m["mask_sup"].item() == 0.0 and m["loss_x"].item() == 0.0
    _, m = _step(UDAOptions(tsa="linear", tsa_pos=2), step=4)  # threshold 1
    assert m["mask_sup"].item() == 1.0 and m["loss_x"].item() == pytest.approx(-math.log(0.9), rel=1e-5)


def test_official_defaults_and_views():
    o = UDAOptions()
    assert (o.wu, o.we, o.confidence, o.temperature, o.tsa, o.tsa_pos) == (1.0, 0.0, 0.95, 1.0, "no", 8)
    assert UDA.views(o) == Views(("weak",), ("weak", "strong"))
    # the official cap: a 2^16 kimg run anneals over (2^14 << 8) images, a sixteenth of it
    assert tsa_progress(2 ** 16, 64, 2 ** 16, 8) == pytest.approx(1.0)
