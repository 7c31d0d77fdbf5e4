"""The per-image CTAugment reference against hand-computed values and the official rules."""
import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fixmatch_ray.data.policies import ctaugment as C


def image(size=32, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3)).astype(np.uint8))


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(int)


class Fixed:
    """Replays given integers (a cutout centre) where the code calls ``rng.integers``."""

    def __init__(self, *values):
        self.values = list(values)

    def integers(self, lo, hi=None):
        return self.values.pop(0)


def test_op_table_and_flat_layout():
    assert len(C.OP_NAMES) == 19
    assert sum(b == (17,) for b in C.OPS.values()) == 16
    assert C.OPS["posterize"] == (8,) and C.OPS["rescale"] == (17, 6) and C.OPS["identity"] == ()
    assert C.N_RATES == 16 * 17 + 8 + 17 + 6 == 303
    off = C.rate_offsets()  # official registration order: identity sits between invert and posterize
    assert off["autocontrast"] == [0] and off["invert"] == [119] and off["identity"] == []
    assert off["posterize"] == [136] and off["rescale"] == [144, 161] and off["rotate"] == [167]
    assert off["translate_y"] == [286]
    assert (C.DEPTH, C.THRESHOLD, C.DECAY) == (2, 0.80, 0.99)  # the flags in effect, not th=0.85


def test_rate_to_p_hand_computed():
    rate = np.array([1.0, 0.85, 0.795, 0.9, 0.5])
    p = C.CTAugment().rate_to_p(rate)
    # (rate + 0.01) / 1.01; 0.805/1.01 = 0.797 < 0.8 and 0.51/1.01 are zeroed
    np.testing.assert_allclose(p, [1.0, 0.86 / 1.01, 0.0, 0.91 / 1.01, 0.0], rtol=1e-12)
    np.testing.assert_allclose(C.CTAugment().rate_to_p(np.zeros(4)), np.ones(4))  # all zero: uniform
    np.testing.assert_allclose(C.CTAugment(threshold=0.9).rate_to_p(rate), [1.0, 0, 0, 0.91 / 1.01, 0])


def test_training_bins_are_drawn_proportional_to_p():
    cta = C.CTAugment()
    pattern = np.full(17, 0.5)
    pattern[[0, 1, 2, 3]] = [1.0, 0.85, 0.795, 0.9]  # p = 1, .8515, 0 (below .8), .9010; the rest 0
    for name, bins in C.OPS.items():
        if bins == (17,):
            cta.rates[name] = [pattern.copy()]
    rng = np.random.default_rng(0)
    bins, offsets = [], []
    for _ in range(6000):
        for name, params in cta.policy(rng, probe=False):
            if C.OPS[name] == (17,):
                v = params[0]
                assert 0 <= v < 1
                bins.append(int(v * 17))
                offsets.append(v * 17 - int(v * 17))
    counts = np.bincount(bins, minlength=17)
    n = counts.sum()
    expected = np.array([1.0, 0.86 / 1.01, 0.0, 0.91 / 1.01] + [0.0] * 13)
    expected /= expected.sum()
    assert counts[2] == 0 and counts[4:].sum() == 0  # zeroed bins are never drawn
    for b in (0, 1, 3):
        assert abs(counts[b] - n * expected[b]) < 4 * np.sqrt(n * expected[b] * (1 - expected[b])), (b, counts)
    assert abs(np.mean(offsets) - 0.5) < 4 * np.sqrt(1 / 12 / n)  # value = (bin + U[0,1)) / 17


def test_ops_are_uniform_and_policy_shape():
    rng = np.random.default_rng(1)
    cta = C.CTAugment()
    names = []
    for _ in range(3000):
        pol = cta.policy(rng, probe=False)
        assert len(pol) == 2 and all(len(v) == len(C.OPS[k]) for k, v in pol)
        names += [k for k, _ in pol]
    counts = np.array([names.count(k) for k in C.OP_NAMES])
    n, p = len(names), 1 / 19
    assert np.all(np.abs(counts - n * p) < 4 * np.sqrt(n * p * (1 - p)))


def test_probe_draws_ignore_rates_and_are_uniform():
    a, b = C.CTAugment(), C.CTAugment()
    for name in C.OP_NAMES:
        b.rates[name] = [np.where(np.arange(len(r)) == 0, 1.0, 0.0) for r in b.rates[name]]  # trains bin 0 only
    pa = [a.policy(np.random.default_rng(s), probe=True) for s in range(200)]
    pb = [b.policy(np.random.default_rng(s), probe=True) for s in range(200)]
    assert pa == pb
    values = [v for pol in pa for _, params in pol for v in params]
    assert np.histogram(values, bins=4, range=(0, 1))[0].min() > len(values) / 4 * 0.7
    trained = [v for s in range(200) for _, params in b.policy(np.random.default_rng(s), False) for v in params[:1]]
    assert all(v < 1 / 6 for v in trained)  # bin 0 of 17, 8 or 6 bins


def test_choice_is_the_inverse_cdf_the_official_code_relies_on():
    p = np.array([0.0, 2.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="sum to 1"):
        np.random.default_rng(0).choice(5, p=p)  # why the official code passes p / p.sum()
    for seed in range(200):
        drawn = np.random.default_rng(seed).choice(5, p=p / p.sum())
        cdf = np.cumsum(p / p.sum())
        assert drawn == np.searchsorted(cdf / cdf[-1], np.random.default_rng(seed).random(), side="right")


def test_update_hand_computed_and_compounding():
    cta = C.CTAugment()
    cta.update([("rotate", (0.5,)), ("rotate", (0.5,))], 0.3)  # bin int(0.5·17·0.999) = int(8.49) = 8, twice
    assert cta.rates["rotate"][0][8] == pytest.approx(0.99 * (0.99 + 0.003) + 0.003, abs=1e-15)  # 0.98607
    assert np.count_nonzero(cta.rates["rotate"][0] != 1) == 1
    cta.update([("rescale", (1 / 17, 0.5)), ("identity", ())], 0.0)  # bins int(0.999) = 0 and int(2.997) = 2
    assert cta.rates["rescale"][0][0] == pytest.approx(0.99) and cta.rates["rescale"][1][2] == pytest.approx(0.99)
    assert cta.rates["rescale"][0][1] == 1.0
    cta.update([("posterize", (0.99999,))], 1.0)  # top value → bin int(7.99) = 7 of 8; 0.99 + 0.01 = 1
    assert cta.rates["posterize"][0][7] == pytest.approx(1.0, abs=1e-15)


def test_proximity_hand_computed():
    assert C.proximity([0.7, 0.2, 0.1], 0) == pytest.approx(0.7)  # 1 − (0.3 + 0.2 + 0.1)/2
    assert C.proximity([0.7, 0.2, 0.1], 1) == pytest.approx(0.2)  # 1 − (0.7 + 0.8 + 0.1)/2
    assert C.proximity([0.0, 1.0], 1) == 1.0 and C.proximity([1.0, 0.0], 1) == 0.0


def test_state_round_trip_is_exact():
    cta = C.CTAugment()
    rng = np.random.default_rng(3)
    for _ in range(300):
        cta.update(cta.policy(rng, probe=True), float(rng.random()))
    state = cta.state_dict()
    assert state["rates"].dtype == torch.float64 and state["rates"].shape == (303,)
    buf = io.BytesIO()
    torch.save(state, buf)
    other = C.CTAugment()
    other.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    for name in C.OP_NAMES:
        assert all(np.array_equal(x, y) for x, y in zip(cta.rates[name], other.rates[name]))
    assert cta.policy(np.random.default_rng(9), False) == other.policy(np.random.default_rng(9), False)
    with pytest.raises(ValueError, match="302 entries, expected 303"):
        other.load_state_dict({"rates": torch.ones(302)})


@pytest.mark.parametrize("size, side", [(32, 16), (96, 48)])
def test_cutout_sizes_and_box(size, side):
    img = image(size)
    out = arr(C.cutout(img, 1.0, Fixed(size // 2, size // 2)))
    gray = (out == 127).all(-1)
    assert gray.sum() == side * side  # 1 + int(level·size·0.499)
    c = size // 2
    assert gray[c - side // 2:c + side // 2, c - side // 2:c + side // 2].all()
    corner = (arr(C.cutout(img, 1.0, Fixed(0, 3))) == 127).all(-1)  # x = 0, y = 3: clipped box
    assert corner[:3 + side // 2, :side // 2].all() and corner.sum() == (side // 2) * (3 + side // 2)
    assert (arr(C.cutout(img, 0.0, Fixed(5, 5))) == arr(img)).all()  # side 1: nothing painted


def test_hand_computed_ops():
    img = image(16)
    a = arr(img)
    assert np.array_equal(arr(C.apply(img, [("posterize", (0.0,))], None)), a & 0x80)  # 1 bit
    assert np.array_equal(arr(C.apply(img, [("posterize", (0.9999,))], None)), a)  # 1 + int(7.998) = 8 bits
    assert np.array_equal(arr(C.apply(img, [("solarize", (0.5,))], None)), np.where(a < 127, a, 255 - a))
    assert np.array_equal(arr(C.apply(img, [("invert", (1.0,))], None)), 255 - a)
    for name in ("autocontrast", "blur", "equalize", "invert", "smooth"):  # blend weight 0
        assert np.array_equal(arr(C.apply(img, [(name, (0.0,))], None)), a), name
    assert np.array_equal(arr(C.apply(img, [("rotate", (0.5,))], None)), a)  # angle round(0) = 0
    assert np.array_equal(arr(C.apply(img, [("rescale", (0.01, 0.3))], None)), a)  # crop rounds to none
    assert np.array_equal(arr(C.apply(img, [("identity", ())], None)), a)


def test_translate_is_a_no_op_as_in_the_official_code():
    img = image(32)
    for d in np.linspace(0, 1, 41, endpoint=False):
        for name in ("translate_x", "translate_y"):
            assert np.array_equal(arr(C.apply(img, [(name, (d,))], None)), arr(img))


def test_bad_policy_entry():
    with pytest.raises(ValueError, match="'rescale' \\(0.5,\\)"):
        C.apply(image(8), [("rescale", (0.5,))], None)


def test_strong_and_probe_use_only_the_passed_rng():
    cta = C.CTAugment()
    state, pystate = np.random.get_state(), random.getstate()
    a = C.strong_augment(image(), cta, np.random.default_rng(4), flip=True)
    b = C.strong_augment(image(), cta, np.random.default_rng(4), flip=True)
    assert np.array_equal(arr(a), arr(b)) and (arr(a) == 127).all(-1).sum() >= 8 * 8  # cutout, ≥ a corner
    p1, pol1 = C.probe(image(), cta, np.random.default_rng(5))
    p2, pol2 = C.probe(image(), cta, np.random.default_rng(5))
    assert pol1 == pol2 and np.array_equal(arr(p1), arr(p2))
    assert np.array_equal(np.random.get_state()[1], state[1]) and random.getstate() == pystate
