"""The batched tensor augmentation against the PIL reference (the oracle), op by op."""
import numpy as np
import pytest
import torch
from PIL import Image

from fixmatch_ray.data.policies.randaugment import CUTOUT_FILL, OP_NAMES, OpDraw, apply_draws, apply_op, cutout
from fixmatch_ray.data.batched import BatchAugmenter, CropStore, strong_batch, weak_batch
from fixmatch_ray.data.policies.randaugment_batched import apply_ops, cutout_batch
from fixmatch_ray.data.policies.randaugment_policy import draw_ops, rand_augment_drawn


def images(n=16, size=32, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
    a[n // 2:] = a[n // 2:] // 4 + 60  # low-contrast half: AutoContrast/Equalize/Contrast do real work
    return a


def to_t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


def to_np(x: torch.Tensor) -> np.ndarray:
    assert x.dtype == torch.uint8
    return x.permute(0, 2, 3, 1).cpu().numpy().astype(int)


# Stated tolerances (measured: geometric ops ≥ 94.1 % of pixels identical at their worst level,
# AutoContrast ≥ 99.88 % with |diff| ≤ 1). Geometric: PIL accumulates its affine coordinates
# incrementally in C, so at exact half-pixel ties a pixel comes from the neighbouring source.
# AutoContrast: PIL's double-precision LUT rounds a few 254.9999.. values differently. Every
# other op is bit-exact.
GEOMETRIC_MIN_EQUAL = 0.94
TOLERANCE = {"Rotate": (GEOMETRIC_MIN_EQUAL, 255), "ShearX": (GEOMETRIC_MIN_EQUAL, 255),
             "ShearY": (GEOMETRIC_MIN_EQUAL, 255), "AutoContrast": (0.998, 1)}


@pytest.mark.parametrize("dense", [False, True], ids=["cpu-subset", "dense(cuda path)"])
@pytest.mark.parametrize("size", [32, 16])
@pytest.mark.parametrize("name", OP_NAMES)
def test_each_op_matches_pil(dense, size, name):
    """Every op, every level 1..9, both signs, against PIL on the same images."""
    a = images(size=size)
    n = len(a)
    min_equal, max_diff = TOLERANCE.get(name, (1.0, 0))
    for level in range(1, 10):
        for sign in (1, -1):
            out = to_np(apply_ops(to_t(a), torch.full((n,), OP_NAMES.index(name)), torch.full((n,), level),
                                  torch.full((n,), sign), torch.ones(n, dtype=torch.bool), dense=dense))
            ref = np.stack([np.asarray(apply_op(Image.fromarray(img), name, level, sign)) for img in a])
            equal = (out == ref).all(-1).mean()
            assert equal >= min_equal and np.abs(out - ref).max() <= max_diff, (name, level, sign, equal)


def test_mixed_ops_and_inactive_samples():
    a = images(n=28)
    x = to_t(a)
    op = torch.arange(28) % 14
    level = torch.arange(28) % 9 + 1
    sign = torch.where(torch.arange(28) % 3 == 0, -1, 1)
    active = torch.arange(28) % 4 != 0
    out = apply_ops(x, op, level, sign, active)
    assert torch.equal(out, apply_ops(x, op, level, sign, active, dense=True))
    for i in range(28):
        ref = apply_op(Image.fromarray(a[i]), OP_NAMES[op[i]], int(level[i]), int(sign[i])) if active[i] else a[i]
        min_equal = TOLERANCE.get(OP_NAMES[op[i]], (1.0, 0))[0] if active[i] else 1.0
        assert (to_np(out[i:i + 1])[0] == np.asarray(ref)).all(-1).mean() >= min_equal, i
    assert torch.equal(out[~active], x[~active])  # inactive: bit-identical


class Replay:
    """Stands in for the PIL path's rng: returns the given integers in order."""

    def __init__(self, *values):
        self.values = list(values)

    def integers(self, lo, hi):
        v = self.values.pop(0)
        assert lo <= v < hi
        return v


def test_cutout_matches_pil_box():
    a = images(n=8)
    rng = np.random.default_rng(5)
    cy, cx = rng.integers(0, 32, 8), rng.integers(0, 32, 8)
    cy[:2], cx[:2] = 0, 31  # corners: the box is clipped there
    out = cutout_batch(to_t(a), 16, torch.tensor(cy), torch.tensor(cx))
    for i in range(8):
        ref = cutout(Image.fromarray(a[i]), 16, Replay(int(cy[i]), int(cx[i])))
        assert np.array_equal(to_np(out[i:i + 1])[0], np.asarray(ref))
    assert (to_np(out) == CUTOUT_FILL[0]).all(-1).sum() > 8 * 64


@pytest.mark.parametrize("dense", [False, True], ids=["cpu-subset", "dense(cuda path)"])
@pytest.mark.parametrize("size", [32, 16])
def test_whole_rand_augment_matches_pil(dense, size):
    """Both rounds, uncovered pixels and Cutout, under the same draws: as the PIL path per image,
    within the per-op tolerances above (measured at 32 px: 6 samples in 300 not bit-exact, each
    with a Rotate or Shear)."""
    n = 300
    a = images(n=n, size=size, seed=2)
    g = torch.Generator().manual_seed(size)
    op, level, sign, active = draw_ops(n, g, torch.device("cpu"))
    cy, cx = torch.randint(0, size, (2, n), generator=g)
    out = to_np(rand_augment_drawn(to_t(a), op, level, sign, active, cy, cx, size // 2, dense=dense))
    for i in range(n):
        draws = [OpDraw(OP_NAMES[op[r, i]], int(level[r, i]), bool(active[r, i]), int(sign[r, i])) for r in range(2)]
        ref = np.asarray(cutout(apply_draws(Image.fromarray(a[i]), draws), size // 2, Replay(int(cy[i]), int(cx[i]))))
        tol = [TOLERANCE.get(d.name, (1.0, 0)) for d in draws if d.apply]
        min_equal, max_diff = min([t[0] for t in tol], default=1.0), max([t[1] for t in tol], default=0)
        equal = (out[i] == ref).all(-1).mean()
        assert equal >= min_equal and np.abs(out[i] - ref).max() <= max_diff, (i, draws, equal)


def reflect_crops(img: np.ndarray, pad: int) -> list[np.ndarray]:
    """Every weak view of ``img``: the two mirrors × every crop of the reflect-padded image."""
    h, w = img.shape[:2]
    p = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return [cand[t:t + h, l:l + w] for cand in (p, p[:, ::-1]) for t in range(2 * pad + 1) for l in range(2 * pad + 1)]


@pytest.mark.parametrize("size,tabulated", [(32, True), (32, False), (16, True), (20, True), (20, False)])
def test_weak_is_a_reflect_crop_and_flips_half_the_time(size, tabulated):
    """Crops of images picked from a larger store (as in training), through both crop layouts."""
    data = images(n=90, size=size)
    index = torch.arange(5, 85)
    g = torch.Generator().manual_seed(1)
    pad = size // 8
    for flip in (False, True):
        store = CropStore(to_t(data), flip, max_bytes=1 << 30 if tabulated else 0)
        assert store.tabulated == tabulated
        out = store.crop(index, g).permute(0, 2, 3, 1).cpu().numpy()
        flipped, offsets = 0, set()
        for i, k in enumerate(index.tolist()):
            views = reflect_crops(data[k], pad)
            hits = [j for j, v in enumerate(views) if np.array_equal(v, out[i])]
            assert hits, i
            flipped += hits[0] >= len(views) // 2
            offsets.add(hits[0] % (2 * pad + 1))
        assert flipped == 0 if not flip else 20 < flipped < 60
        assert offsets == set(range(2 * pad + 1))  # every column offset


def test_weak_batch_is_the_crop_of_every_image():
    x = to_t(images(n=12))
    a = weak_batch(x, torch.Generator().manual_seed(7), True)
    b = CropStore(x, True).crop(torch.arange(12), torch.Generator().manual_seed(7))
    assert a.dtype == torch.uint8 and torch.equal(a, b)


def test_draw_statistics():
    g = torch.Generator().manual_seed(0)
    op, level, sign, active = draw_ops(10000, g, torch.device("cpu"))  # 20000 op draws
    n = op.numel()
    counts = torch.bincount(op.flatten(), minlength=14).numpy()
    p = 1 / 14
    assert np.all(np.abs(counts - n * p) < 4 * np.sqrt(n * p * (1 - p)))
    lv = torch.bincount(level.flatten(), minlength=11).numpy()  # official randint(1, 10): 1..9
    assert len(lv) == 11 and lv[0] == 0 and lv[10] == 0
    assert np.all(np.abs(lv[1:10] - n / 9) < 4 * np.sqrt(n / 9 * 8 / 9))
    assert abs(active.float().mean().item() - 0.5) < 4 * 0.5 / np.sqrt(n)
    assert set(sign.unique().tolist()) == {-1, 1}


def test_strong_determinism_and_shapes():
    x = torch.from_numpy(images(n=32)).permute(0, 3, 1, 2).contiguous()
    aug = BatchAugmenter((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), flip=True)
    a = aug(x, torch.Generator().manual_seed(3), strong=True)
    b = aug(x, torch.Generator().manual_seed(3), strong=True)
    c = aug(x, torch.Generator().manual_seed(4), strong=True)
    assert a.shape == (32, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    gray = (CUTOUT_FILL[0] / 255 - 0.5) / 0.25
    assert all(((a[i] - gray).abs() < 1e-6).all(0).any() for i in range(32))  # cutout always on
    const = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    w = aug(const, torch.Generator().manual_seed(0), strong=False)
    assert torch.allclose(w, torch.full_like(w, (1 - 0.5) / 0.25))
    s = strong_batch(x, torch.Generator().manual_seed(3), True)
    assert s.dtype == torch.uint8 and s.shape == x.shape
