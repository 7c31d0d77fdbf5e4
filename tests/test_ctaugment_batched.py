"""The batched CTAugment (device path) against the per-image PIL reference, op by op and draw by draw.

Every op is bit-exact (tolerance: none): the batched ops use PIL's own arithmetic (fixed-point
affine, fixed-point resampling, float32 blends), see fixmatch_ray.data.policies.ctaugment_ops.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from fixmatch_ray.data.policies import ctaugment as C
from fixmatch_ray.data.policies.ctaugment_batched import (BatchedCTAugment, apply_policy_batch, bins_from_uniform, cutout_level,
                                            draw_policy, probabilities, proximity_batch, update_rates)
from fixmatch_ray.data.policies.ctaugment_ops import OP, apply_round


class Fixed:
    """Replays given integers (cutout centres) where the reference calls ``rng.integers``."""

    def __init__(self, *values):
        self.values = list(values)

    def integers(self, lo, hi=None):
        return self.values.pop(0)


def images(n, h, w=None, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, h, w or h, 3)).astype(np.uint8)
    a[n // 2:] = a[n // 2:] // 4 + 60  # low-contrast half: autocontrast/equalize/contrast do real work
    return a


def to_t(a):
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


def to_np(x):
    assert x.dtype == torch.uint8
    return x.permute(0, 2, 3, 1).cpu().numpy()


def edge_values(n, rng, nbins=17):
    """Random parameters plus bin edges, 0, ½ and the top of [0, 1)."""
    v = rng.random(n)
    edges = [0.0, 0.5, 1 - 1e-12] + [k / nbins for k in range(1, nbins)]
    v[:min(n, len(edges))] = edges[:n]
    return torch.from_numpy(v)


def reference(a, name, v0, v1, cx, cy):
    out = []
    for i in range(len(a)):
        params = (float(v0[i]), float(v1[i]))[:len(C.OPS[name])]
        out.append(np.asarray(C.apply(Image.fromarray(a[i]), [(name, params)], Fixed(int(cx[i]), int(cy[i])))))
    return np.stack(out)


@pytest.mark.parametrize("dense", [False, True], ids=["cpu-sorted", "dense(cuda path)"])
@pytest.mark.parametrize("shape,n", [((32, 32), 28), ((96, 96), 6), ((24, 40), 8)])
@pytest.mark.parametrize("name", C.OP_NAMES)
def test_each_op_matches_the_reference_bit_exactly(name, shape, n, dense):
    rng = np.random.default_rng(OP[name])
    h, w = shape
    a = images(n, h, w)
    v0, v1 = edge_values(n, rng), edge_values(n, rng, 6).flip(0)
    cx, cy = torch.from_numpy(rng.integers(0, w, n)), torch.from_numpy(rng.integers(0, h, n))
    out = apply_round(to_t(a), torch.full((n,), OP[name]), v0, v1, cx, cy, dense=dense)
    assert np.array_equal(to_np(out), reference(a, name, v0, v1, cx, cy))


@pytest.mark.parametrize("size", [32, 96])
def test_rescale_at_every_crop_and_method(size):
    """Crop offsets where s·size sits on .5 (PIL rounds half to even) and every method's bin edges."""
    k = np.arange(size // 4 + 1)
    v0 = np.concatenate([(k + 0.5) * 4 / size, k * 4 / size, (k + 0.25) * 4 / size])
    v0 = v0[v0 < 1]
    v1 = np.resize(np.array([0.0, 1 / 6, 1 / 5.99, 2 / 6, 0.5, 4 / 6, 5 / 6, 0.999999]), len(v0))
    a = images(len(v0), size, seed=1)
    zeros = torch.zeros(len(v0), dtype=torch.long)
    out = apply_round(to_t(a), torch.full((len(v0),), OP["rescale"]), torch.from_numpy(v0), torch.from_numpy(v1),
                      zeros, zeros)
    assert np.array_equal(to_np(out), reference(a, "rescale", v0, v1, zeros, zeros))


def test_rotate_every_angle():
    v = torch.from_numpy((np.arange(-45, 46) / 45 + 1) / 2 * 0.999999 + 1e-7)  # round((2v − 1)·45) = −45..45
    a = images(len(v), 32, seed=2)
    zeros = torch.zeros(len(v), dtype=torch.long)
    out = apply_round(to_t(a), torch.full((len(v),), OP["rotate"]), v, v, zeros, zeros)
    assert np.array_equal(to_np(out), reference(a, "rotate", v, v, zeros, zeros))


def test_mixed_batch_dense_equals_sorted_equals_reference():
    n = 57
    a = images(n, 32, seed=3)
    rng = np.random.default_rng(3)
    op = torch.arange(n) % 19
    v0, v1 = torch.from_numpy(rng.random(n)), torch.from_numpy(rng.random(n))
    cx, cy = torch.from_numpy(rng.integers(0, 32, n)), torch.from_numpy(rng.integers(0, 32, n))
    sorted_out = apply_round(to_t(a), op, v0, v1, cx, cy, dense=False)
    assert torch.equal(sorted_out, apply_round(to_t(a), op, v0, v1, cx, cy, dense=True))
    for i in range(n):
        name = C.OP_NAMES[int(op[i])]
        assert np.array_equal(to_np(sorted_out[i:i + 1])[0], reference(a[i:i + 1], name, v0[i:i + 1], v1[i:i + 1],
                                                                         cx[i:i + 1], cy[i:i + 1])[0]), name


def test_policies_match_the_reference_apply():
    n = 120
    a = images(n, 32, seed=4)
    g = torch.Generator().manual_seed(4)
    ops, values = draw_policy(torch.ones(C.N_RATES, dtype=torch.float64), n, g, probe=False)
    cx, cy = torch.randint(0, 32, (2, n, 2), generator=g)
    out = to_np(apply_policy_batch(to_t(a), ops, values, centres=(cx, cy)))
    for i in range(n):
        policy = [(C.OP_NAMES[int(o)], tuple(float(t) for t in values[i, r, :len(C.OPS[C.OP_NAMES[int(o)]])]))
                  for r, o in enumerate(ops[i])]
        centres = [int(c[i, r]) for r in range(2) if policy[r][0] == "cutout" for c in (cx, cy)]  # drawn if used
        ref = C.apply(Image.fromarray(a[i]), policy, Fixed(*centres))
        assert np.array_equal(out[i], np.asarray(ref)), policy


def rates_with_pattern():
    """Every 17-bin parameter: rates (1, .85, .795, .9, .5, ...) → p = (1, .8515, 0, .9010, 0, ...)."""
    cta = C.CTAugment()
    pattern = np.full(17, 0.5)
    pattern[:4] = [1.0, 0.85, 0.795, 0.9]
    for name, bins in C.OPS.items():
        cta.rates[name] = [pattern.copy() if nb == 17 else r for nb, r in zip(bins, cta.rates[name])]
    return cta


def test_probabilities_equal_the_reference_rate_to_p():
    cta = rates_with_pattern()
    p = probabilities(cta.state_dict()["rates"])
    for i, name in enumerate(C.OP_NAMES):
        for j, rate in enumerate(cta.rates[name]):
            assert torch.equal(p[i, j, :len(rate)], torch.from_numpy(cta.rate_to_p(rate))), name
            assert (p[i, j, len(rate):] == 0).all()


def test_bins_from_uniform_is_numpy_choice():
    rng = np.random.default_rng(0)
    for _ in range(300):
        w = rng.random(17) * (rng.random(17) < 0.5)
        w[rng.integers(17)] = 1.0
        u = np.random.default_rng(1).random()
        expect = np.random.default_rng(1).choice(17, p=w / w.sum())
        assert int(bins_from_uniform(torch.from_numpy(w), torch.tensor(u, dtype=torch.float64))) == expect


def test_batched_draws_bins_proportional_to_p_and_ops_uniform():
    rates = rates_with_pattern().state_dict()["rates"]
    n = 40000
    ops, values = draw_policy(rates, n, torch.Generator().manual_seed(0), probe=False)
    counts = torch.bincount(ops.view(-1), minlength=19).numpy()
    m, p = ops.numel(), 1 / 19
    assert np.all(np.abs(counts - m * p) < 4 * np.sqrt(m * p * (1 - p)))
    single = torch.tensor([C.OPS[k] == (17,) for k in C.OP_NAMES])[ops]
    v = values[..., 0][single]
    bins = torch.bincount((v * 17).long(), minlength=17).numpy()
    expected = np.array([1.0, 0.86 / 1.01, 0.0, 0.91 / 1.01] + [0.0] * 13)
    expected /= expected.sum()
    k = bins.sum()
    assert bins[2] == 0 and bins[4:].sum() == 0
    assert np.all(np.abs(bins[[0, 1, 3]] - k * expected[[0, 1, 3]]) < 4 * np.sqrt(k * expected[[0, 1, 3]]))
    assert ((values[..., 1] == 0) | (ops == OP["rescale"])).all()  # second parameter: rescale only


def test_probe_draws_ignore_rates():
    a = draw_policy(torch.ones(C.N_RATES, dtype=torch.float64), 5000, torch.Generator().manual_seed(1), probe=True)
    b = draw_policy(torch.zeros(C.N_RATES, dtype=torch.float64), 5000, torch.Generator().manual_seed(1), probe=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    v = a[1][..., 0][a[0] != OP["identity"]]
    assert torch.histc(v, bins=4, min=0, max=1).min() > len(v) / 4 * 0.9


def sequential_reference(rates, ops, values, prox):
    cta = C.CTAugment()
    cta.load_state_dict({"rates": rates})
    for i in range(len(ops)):
        policy = [(C.OP_NAMES[int(o)], tuple(float(t) for t in values[i, r, :len(C.OPS[C.OP_NAMES[int(o)]])]))
                  for r, o in enumerate(ops[i])]
        cta.update(policy, float(prox[i]))
    return cta.state_dict()["rates"]


def test_update_rates_hand_computed_compounding():
    ops = torch.full((3, 2), OP["rotate"])
    values = torch.zeros(3, 2, 2, dtype=torch.float64)
    values[:, :, 0] = torch.tensor([[0.5, 0.5], [0.5, 0.9], [0.5, 0.5]], dtype=torch.float64)
    out = update_rates(torch.ones(C.N_RATES, dtype=torch.float64), ops, values, torch.tensor([1.0, 0.0, 1.0]))
    start = C.rate_offsets()["rotate"][0]
    # bin 8 is hit 5 times with q = 1, 1, 0, 1, 1: 1 → 1 → 1 → .99 → .9901 → .990199
    assert out[start + 8].item() == pytest.approx(0.990199, abs=1e-15)
    assert out[start + 15].item() == pytest.approx(0.99, abs=1e-15)  # int(0.9·17·0.999) = 15, q = 0
    assert torch.nonzero(out != 1).view(-1).tolist() == [start + 8, start + 15]  # nothing else moved


def test_update_rates_equals_the_sequential_reference():
    g = torch.Generator().manual_seed(5)
    rates = torch.ones(C.N_RATES, dtype=torch.float64)
    for step in range(30):
        ops, values = draw_policy(rates, 64, g, probe=True)
        if step % 3 == 0:  # many repeats of one bin in a batch: the compounding case
            ops[::2], values[::2] = ops[0], values[0]
        prox = torch.rand(64, generator=g, dtype=torch.float64)
        expect = sequential_reference(rates, ops, values, prox)
        rates = update_rates(rates, ops, values, prox)
        torch.testing.assert_close(rates, expect, rtol=1e-14, atol=1e-15)
    assert (rates != 1).sum() > 200


def test_proximity_batch_hand_computed():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(proximity_batch(probs, torch.tensor([0, 1, 1])),
                               torch.tensor([0.7, 0.2, 1.0], dtype=torch.float64))


def test_state_round_trip_and_interchange_with_the_reference():
    g = torch.Generator().manual_seed(6)
    cta = BatchedCTAugment()
    x = to_t(images(16, 32))
    for _ in range(5):
        probe, ops, values = cta.probe(x, g)
        cta.update(ops, values, torch.softmax(torch.randn(16, 10, generator=g), 1), torch.randint(0, 10, (16,)))
    state = cta.state_dict()
    other = BatchedCTAugment()
    other.load_state_dict(state)
    assert torch.equal(other.rates, cta.rates) and other.rates.dtype == torch.float64
    s1 = cta.strong(x, torch.Generator().manual_seed(2))
    assert torch.equal(s1, other.strong(x, torch.Generator().manual_seed(2)))
    ref = C.CTAugment()
    ref.load_state_dict(state)  # the same flat layout both ways
    assert torch.equal(ref.state_dict()["rates"], state["rates"])
    with pytest.raises(ValueError, match="304 entries, expected 303"):
        other.load_state_dict({"rates": torch.ones(304)})


def test_strong_view_shapes_determinism_and_cutout():
    x = to_t(images(32, 32))
    cta = BatchedCTAugment()
    a, b = cta.strong(x, torch.Generator().manual_seed(3)), cta.strong(x, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, cta.strong(x, torch.Generator().manual_seed(4)))
    assert all(((a[i] == 127).all(0)).sum() >= 64 for i in range(32))  # a 16 px box, ≥ a quarter inside
    c = cutout_level(torch.zeros(4, 3, 96, 96, dtype=torch.uint8), 1.0, torch.Generator().manual_seed(0))
    assert ((c == 127).all(1).sum((1, 2)) <= 48 * 48).all() and ((c == 127).all(1).sum((1, 2)) >= 24 * 24).all()


def test_autocontrast_every_range_and_contrast_every_mean():
    """Every channel range hi − lo = 1..255 (PIL's scale 255/(hi − lo) in float64: torch's
    ``255.0 / t`` would be 255·(1/t), an ulp off for 54 of them) and gray means k + ½ at 96×96."""
    lo = np.random.default_rng(0).integers(0, 256 - np.arange(1, 256))
    a = np.empty((255, 16, 16, 3), np.uint8)
    for i, d in enumerate(range(1, 256)):
        a[i] = (lo[i] + np.arange(256).reshape(16, 16, 1) % (d + 1)).astype(np.uint8)
    n, zeros = len(a), torch.zeros(len(a), dtype=torch.long)
    for name in ("autocontrast", "contrast"):
        v = torch.full((n,), 0.999, dtype=torch.float64)
        out = apply_round(to_t(a), torch.full((n,), OP[name]), v, v, zeros, zeros)
        assert np.array_equal(to_np(out), reference(a, name, v, v, zeros, zeros)), name
    b = np.full((4, 96, 96, 3), 100, np.uint8)
    b[:, :48, :, :] = 101  # gray mean 100.5 exactly: rounds up to 101
    b[1:, 0, 0] = [99, 102, 101]
    v = torch.full((4,), 0.0, dtype=torch.float64)  # factor 0.1: the degenerate gray dominates
    out = apply_round(to_t(b), torch.full((4,), OP["contrast"]), v, v, zeros[:4], zeros[:4])
    assert np.array_equal(to_np(out), reference(b, "contrast", v, v, zeros[:4], zeros[:4]))
