"""RandAugment's PIL reference (data/policies/randaugment.py) against hand-computed (numpy) or
independently PIL-computed expectations."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from fixmatch_ray.data.policies.randaugment import (CUTOUT_FILL, OP_NAMES, OpDraw, ViewTransform, apply_draws,
                                  apply_op, cutout, draw_rand_augment, magnitude, rand_augment_mc, strong_augment,
                                  weak_augment)


def image(size: int = 8, seed: int = 0, lo: int = 0, hi: int = 256) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(lo, hi, (size, size, 3)).astype(np.uint8))


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(int)


@pytest.mark.parametrize("name, level, expected", [
    ("Brightness", 9, 1.72), ("Brightness", 5, 1.0), ("Contrast", 1, 0.28), ("Color", 9, 1.72),
    ("Sharpness", 5, 1.0), ("Posterize", 9, 1), ("Posterize", 1, 4), ("Posterize", 5, 2),
    ("Rotate", 7, 21), ("Rotate", 9, 27), ("Solarize", 5, 128), ("Solarize", 9, 26), ("Solarize", 1, 231),
    ("ShearX", 9, 0.27), ("TranslateY", 5, 5), ("TranslateX", 1, 1), ("Identity", 3, None),
    ("AutoContrast", 3, None), ("Equalize", 9, None),
])
def test_magnitudes_hand_computed(name, level, expected):
    if expected is None:
        assert magnitude(name, level) is None
    else:
        assert magnitude(name, level) == pytest.approx(expected)


def test_op_table():
    """The 14 ops of the paper's table; only the geometric ones change with the sign (checked on
    the images they produce, not on the constant)."""
    assert len(OP_NAMES) == 14 and len(set(OP_NAMES)) == 14
    img = image(size=16, seed=3)
    flips = {name for name in OP_NAMES if not np.array_equal(arr(apply_op(img, name, 5, sign=1)),
                                                           arr(apply_op(img, name, 5, sign=-1)))}
    assert flips == {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}
    assert magnitude("TranslateX", 9) == 9  # 9 px at any image size


@pytest.mark.parametrize("name, level", [("Blur", 3), ("Rotate", 0), ("Rotate", 10), ("Rotate", 2.5),
                                         ("Posterize", -1)])
def test_bad_op_or_level(name, level):
    with pytest.raises(ValueError, match=repr(name) if name == "Blur" else str(level)):
        magnitude(name, level)


def test_identity_posterize_solarize_match_numpy():
    img = image()
    a = arr(img)
    assert np.array_equal(arr(apply_op(img, "Identity", 4)), a)
    assert np.array_equal(arr(apply_op(img, "Posterize", 1)), a & 0xF0)  # 4 bits
    assert np.array_equal(arr(apply_op(img, "Solarize", 5)), np.where(a >= 128, 255 - a, a))
    assert np.array_equal(arr(apply_op(img, "Solarize", 1, sign=-1)), np.where(a >= 231, 255 - a, a))  # unsigned


@pytest.mark.parametrize("sign", [1, -1])
def test_translate_x_moves_pixels(sign):
    img = image(size=32)
    a = arr(img)
    out = arr(apply_op(img, "TranslateX", 9, sign))  # 9 px
    k = 9
    if sign > 0:  # content moves left, black (PIL's fill when none is given) enters from the right
        assert np.array_equal(out[:, :-k], a[:, k:]) and np.all(out[:, -k:] == 0)
    else:
        assert np.array_equal(out[:, k:], a[:, :-k]) and np.all(out[:, :k] == 0)


def test_translate_y_moves_rows():
    img = image(size=32)
    out = arr(apply_op(img, "TranslateY", 5))  # 5 px up
    assert np.array_equal(out[:-5], arr(img)[5:]) and np.all(out[-5:] == 0)


@pytest.mark.parametrize("name, level, sign", [("ShearX", 9, 1), ("ShearX", 3, -1), ("ShearY", 9, -1),
                                               ("ShearY", 7, 1)])
def test_shear_matches_hand_computed_nearest_sampling(name, level, sign):
    # PIL's affine maps each output pixel centre to the input and takes the nearest pixel:
    # ShearX samples input column floor(x + .5 + s*(y + .5)); ShearY the same with x and y swapped.
    img = image(size=16, seed=1)
    a = arr(img)
    s = sign * level * 0.03
    a_t = a if name == "ShearX" else a.transpose(1, 0, 2)
    exp = np.empty_like(a)
    for y in range(16):
        for x in range(16):
            src = int(np.floor(x + 0.5 + s * (y + 0.5)))
            exp[y, x] = a_t[y, src] if 0 <= src < 16 else 0
    if name == "ShearY":
        exp = exp.transpose(1, 0, 2)
    assert np.array_equal(arr(apply_op(img, name, level, sign)), exp)


def test_geometric_ops_match_pil_with_explicit_parameters():
    img = image(size=16)
    assert np.array_equal(arr(apply_op(img, "Rotate", 9, -1)), arr(img.rotate(-27)))
    assert np.array_equal(arr(apply_op(img, "Rotate", 7)), arr(img.rotate(21)))
    shx = img.transform(img.size, Image.AFFINE, (1, 0.27, 0, 0, 1, 0))
    assert np.array_equal(arr(apply_op(img, "ShearX", 9)), arr(shx))
    shy = img.transform(img.size, Image.AFFINE, (1, 0, 0, -0.15, 1, 0))
    assert np.array_equal(arr(apply_op(img, "ShearY", 5, -1)), arr(shy))
    # a 90-degree rotation of a square is a pure pixel permutation: check against numpy
    rot = arr(img.rotate(90))
    assert np.array_equal(rot, np.rot90(arr(img)))


def test_enhancers_use_the_official_factor():
    gray = Image.new("RGB", (4, 4), (100, 100, 100))
    assert arr(apply_op(gray, "Brightness", 9))[0, 0, 0] == 172  # 100 * 1.72
    assert arr(apply_op(gray, "Brightness", 1))[0, 0, 0] == 28  # 100 * 0.28
    img = image()
    assert np.array_equal(arr(apply_op(img, "Brightness", 5)), arr(img))  # factor 1.0 is the identity
    img = image()
    for name, cls in [("Color", ImageEnhance.Color), ("Contrast", ImageEnhance.Contrast),
                      ("Sharpness", ImageEnhance.Sharpness)]:
        assert np.array_equal(arr(apply_op(img, name, 7)), arr(cls(img).enhance(0.1 + 1.8 * 0.7)))


def test_autocontrast_and_equalize():
    # values 50 / 100 / 150 stretch to 0 / 127 / 255: (v - 50) * 255 / 100, truncated
    a = np.random.default_rng(0).choice([50, 100, 150], size=(8, 8, 3)).astype(np.uint8)
    a[0, 0], a[0, 1] = 50, 150
    img = Image.fromarray(a)
    out = arr(apply_op(img, "AutoContrast", 3))
    assert np.array_equal(out, (a.astype(int) - 50) * 255 // 100)
    img = image(lo=50, hi=151)
    assert np.array_equal(arr(apply_op(img, "Equalize", 3)), arr(ImageOps.equalize(img)))


def test_cutout_box():
    img = image(size=32)
    before = arr(img).copy()
    out = arr(cutout(img, 16, np.random.default_rng(3)))
    assert np.array_equal(arr(img), before)  # input untouched
    gray = np.all(out == CUTOUT_FILL, axis=-1)
    changed = np.any(out != before, axis=-1)
    assert np.all(gray[changed]) and changed.sum() > 0  # only the box changed
    sizes = set()
    for s in range(300):
        g = np.all(arr(cutout(Image.new("RGB", (32, 32)), 16, np.random.default_rng(s))) == CUTOUT_FILL, -1)
        h, w = g.any(1).sum(), g.any(0).sum()
        assert 8 <= h <= 16 and 8 <= w <= 16 and g.sum() == h * w  # a rectangle, clipped to >= half
        sizes.add((h, w))
    assert (16, 16) in sizes  # whole inside the image, and clipped near the border:
    assert any(h < 16 for h, _ in sizes) and any(w < 16 for _, w in sizes)
    same = cutout(img, 16, np.random.default_rng(9)), cutout(img, 16, np.random.default_rng(9))
    assert np.array_equal(arr(same[0]), arr(same[1]))


def _is_crop_of(out: np.ndarray, src: np.ndarray, pad: int) -> bool:
    padded = np.pad(src, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    h, w = src.shape[:2]
    return any(np.array_equal(out, padded[t:t + h, l:l + w]) for t in range(2 * pad + 1) for l in range(2 * pad + 1))


def test_weak_augment_crop_and_flip():
    img = image(size=16)
    a = arr(img)
    flipped = 0
    for s in range(40):
        out = arr(weak_augment(img, np.random.default_rng(s), flip=False))
        assert out.shape == a.shape and _is_crop_of(out, a, 2)
        out = arr(weak_augment(img, np.random.default_rng(s), flip=True))
        if not _is_crop_of(out, a, 2):
            assert _is_crop_of(out, a[:, ::-1], 2)
            flipped += 1
    assert 5 < flipped < 35


def test_weak_augment_matches_torchvision_pad_and_crop():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    img = image(size=32)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        replay = copy.deepcopy(rng)
        out = weak_augment(img, rng, flip=True)
        # replay the documented draw order: flip coin, then top, then left offset in 0..8
        ref = tvf.hflip(img) if replay.random() < 0.5 else img
        top, left = int(replay.integers(0, 9)), int(replay.integers(0, 9))
        ref = tvf.crop(tvf.pad(ref, 4, padding_mode="reflect"), top, left, 32, 32)
        assert out.size == (32, 32) and np.array_equal(arr(out), arr(ref))


def test_rand_augment_draw_statistics():
    rng = np.random.default_rng(0)
    draws = [d for _ in range(10000) for d in draw_rand_augment(rng)]  # 20000 ops
    n = len(draws)
    counts = np.array([sum(d.name == op for d in draws) for op in OP_NAMES])
    p = 1 / 14
    assert np.all(np.abs(counts - n * p) < 4 * np.sqrt(n * p * (1 - p)))
    levels = np.bincount([d.level for d in draws], minlength=11)  # official randint(1, 10): 1..9
    assert len(levels) == 11 and levels[0] == 0 and levels[10] == 0
    assert np.all(np.abs(levels[1:10] - n / 9) < 4 * np.sqrt(n / 9 * 8 / 9))
    applied = sum(d.apply for d in draws)
    assert abs(applied - n / 2) < 4 * np.sqrt(n / 4)
    assert abs(sum(d.sign for d in draws)) < 4 * np.sqrt(n)
    assert set(d.sign for d in draws) == {-1, 1}


def test_rand_augment_draw_order_is_fixed():
    rng, replay = np.random.default_rng(11), np.random.default_rng(11)
    draws = draw_rand_augment(rng, n=3)
    expected = []
    for _ in range(3):  # op, level, apply coin, sign: 4 draws per op whatever the op is
        name, level = OP_NAMES[int(replay.integers(14))], int(replay.integers(1, 10))
        expected.append(OpDraw(name, level, bool(replay.random() < 0.5), 1 if replay.random() < 0.5 else -1))
    assert draws == expected and rng.random() == replay.random()
    assert draw_rand_augment(np.random.default_rng(0), n=0) == []
    for m in (1, 11):
        with pytest.raises(ValueError, match=f"m={m}"):
            draw_rand_augment(np.random.default_rng(0), m=m)


def test_rand_augment_mc_applies_drawn_ops_then_cutout():
    img = image(size=16)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        replay = copy.deepcopy(rng)
        out = rand_augment_mc(img, rng)
        exp = apply_draws(img, draw_rand_augment(replay))
        exp = cutout(exp, 8, replay)  # half of 16 px
        assert np.array_equal(arr(out), arr(exp))


def test_strong_augment_is_deterministic_per_seed():
    img = image(size=32)
    a = strong_augment(img, np.random.default_rng(5), flip=True)
    b = strong_augment(img, np.random.default_rng(5), flip=True)
    c = strong_augment(img, np.random.default_rng(6), flip=True)
    assert np.array_equal(arr(a), arr(b)) and not np.array_equal(arr(a), arr(c))
    assert np.any(np.all(arr(a) == CUTOUT_FILL, -1))  # cutout always on


def test_transform_normalisation():
    t = ViewTransform((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), flip=True)
    const = Image.new("RGB", (16, 16), (255, 0, 51))
    x = t.test(const)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], torch.tensor([2.0, -2.0, (0.2 - 0.5) / 0.25]))
    w, s = t.unlabeled(const, np.random.default_rng(0))
    assert w.shape == s.shape == (3, 16, 16) and w.dtype == s.dtype == torch.float32
    (lb,) = t.labeled(const, np.random.default_rng(1))
    assert torch.allclose(lb, x)
    assert torch.allclose(w, x)  # a constant image is unchanged by flips and reflect crops


def test_cutout_exact_box_from_replayed_draws():
    black = Image.new("RGB", (32, 32))
    for seed in range(30):
        replay = np.random.default_rng(seed)
        cy, cx = int(replay.integers(0, 32)), int(replay.integers(0, 32))  # official: row, then column
        exp = np.zeros((32, 32), bool)
        exp[max(0, cy - 8):min(32, cy + 8), max(0, cx - 8):min(32, cx + 8)] = True  # clipped, not moved
        out = arr(cutout(black, 16, np.random.default_rng(seed)))
        assert np.array_equal(np.all(out == CUTOUT_FILL, -1), exp)


def test_unlabeled_draws_weak_then_strong():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    t = ViewTransform(mean, std, flip=True)
    img = image(size=16, seed=4)
    w, s = t.unlabeled(img, np.random.default_rng(8))
    replay = np.random.default_rng(8)
    exp_w = weak_augment(img, replay, flip=True)
    exp_s = strong_augment(img, replay, flip=True)
    for got, exp in ((w, exp_w), (s, exp_s)):
        ref = (torch.tensor(arr(exp), dtype=torch.float32).permute(2, 0, 1) / 255
               - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        assert torch.allclose(got, ref, atol=1e-6)
