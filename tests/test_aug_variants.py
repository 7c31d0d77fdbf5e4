"""The official augmentation ablations, by their effect on images and batches, on both paths:
``strong_aug`` (ab_fixmatch_nocutout / ab_fixmatch_onlycutout) for RandAugment and CTAugment, and
``anchoring`` (ab_fixmatch_anchoring: which view makes the pseudo-label, which is trained)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fixmatch_ray.data.batched import BatchAugmenter, CropStore
from fixmatch_ray.data.normalize import normalize
from fixmatch_ray.data.policies import build_policy
from fixmatch_ray.data.policies.base import check_views
from fixmatch_ray.data.policies.ctaugment import CUTOUT_FILL as CTA_FILL
from fixmatch_ray.data.policies.ctaugment_batched import (BatchedCTAugment, CTAugmentPolicy, apply_policy_batch,
                                                         cutout_level)
from fixmatch_ray.data.policies.randaugment import (CUTOUT_FILL, ViewTransform, apply_op, cutout, cutout_box,
                                                    draw_rand_augment, rand_augment_mc, to_tensor, weak_augment)
from fixmatch_ray.data.policies.randaugment_batched import cutout_batch
from fixmatch_ray.data.policies.randaugment_policy import RandAugment, draw_ops, rand_augment_batch, rand_augment_drawn

FILL = CUTOUT_FILL[0]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _images(n: int = 12, size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 (N, 3, H, W) with no pixel at either Cutout grey (127, 128), so a painted box is unmistakable."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return torch.where((x == 127) | (x == 128), x + 2, x)


def _pil(x: torch.Tensor, i: int = 0) -> Image.Image:
    return Image.fromarray(x[i].permute(1, 2, 0).numpy())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_one_gray_box(before: torch.Tensor, after: torch.Tensor, side: int, fill: int = FILL) -> None:
    """Per sample: the pixels that changed are exactly an axis-aligned box (clipped at the border,
    at most ``side`` wide), all channels, painted the cutout gray; nothing else moved."""
    for b, a in zip(before, after):
        changed = (b != a).any(0)
        assert changed.any()
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        box = torch.zeros_like(changed)
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert torch.equal(changed, box)
        assert len(rows) <= side and len(cols) <= side
        assert (a[:, changed] == fill).all()


# -- RandAugment ----------------------------------------------------------------------------------
def test_randaugment_pil_no_cutout_is_the_drawn_ops_alone():
    img = _pil(_images())
    out = build_policy("randaugment", strong_aug="no_cutout").strong_image(img, np.random.default_rng(4))
    rng, ref = np.random.default_rng(4), img
    for d in draw_rand_augment(rng):
        if d.apply:
            ref = apply_op(ref, d.name, d.level, d.sign)
    assert np.array_equal(np.asarray(out), np.asarray(ref))
    # and the full view is that image with its Cutout, the next draws of the same stream
    full = rand_augment_mc(img, np.random.default_rng(4))
    assert np.array_equal(np.asarray(full), np.asarray(cutout(ref, 16, rng)))


def test_randaugment_pil_cutout_only_paints_one_box_and_nothing_else():
    x = _images()
    policy = build_policy("randaugment", strong_aug="cutout_only")
    for i in range(len(x)):
        out = policy.strong_image(_pil(x, i), np.random.default_rng(i))
        assert np.array_equal(np.asarray(out), np.asarray(cutout(_pil(x, i), 16, np.random.default_rng(i))))
        _assert_one_gray_box(x[i:i + 1], torch.from_numpy(np.array(out)).permute(2, 0, 1)[None], 16)


def _centres(g: torch.Generator, n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The Cutout centres as the batched path draws them: row, then column, uniform over pixels."""
    return torch.randint(0, size, (n,), generator=g), torch.randint(0, size, (n,), generator=g)


def test_randaugment_batch_no_cutout_is_the_drawn_ops_and_full_adds_the_box():
    x = _images()
    out = rand_augment_batch(x, _gen(7), with_cutout=False)
    draws = draw_ops(len(x), _gen(7), x.device)
    none = torch.zeros(len(x), dtype=torch.long)
    ref = rand_augment_drawn(x, *draws, none, none, 0)  # the ops, uncovered pixels grey, no box
    assert torch.equal(out, ref)
    g = _gen(7)
    rand_augment_batch(x, g, with_cutout=False)  # the same draws, then the Cutout's centres
    cy, cx = _centres(g, len(x))
    full = rand_augment_batch(x, _gen(7))
    assert torch.equal(full, rand_augment_drawn(x, *draws, cy, cx, 16))
    for i in range(len(x)):  # full = no_cutout outside the box, grey inside it
        y0, y1, x0, x1 = cutout_box(int(cy[i]), int(cx[i]), 32, 32, 16)
        inside = torch.zeros(32, 32, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(full[i][:, ~inside], out[i][:, ~inside])
        assert (full[i][:, inside] == FILL).all()


def test_randaugment_batch_cutout_only_paints_one_box_per_sample():
    x = _images()
    out = RandAugment(with_ops=False).strong_batch(x, _gen(3))
    cy, cx = _centres(_gen(3), len(x))
    assert torch.equal(out, cutout_batch(x, 16, cy, cx))
    _assert_one_gray_box(x, out, 16)


def test_randaugment_paths_agree_on_the_variants_under_the_same_draws():
    """Per image and batched, the part left out draws nothing, so each path is its remaining part:
    both paths' Cutout paint the same box for the same centre, their ops agree as tested elsewhere."""
    x = _images(n=1)
    img = _pil(x)
    rng = np.random.default_rng(11)
    cy, cx = int(rng.integers(0, 32)), int(rng.integers(0, 32))  # what cutout() draws first
    pil = np.asarray(build_policy("randaugment", strong_aug="cutout_only").strong_image(img, np.random.default_rng(11)))
    batch = cutout_batch(x, 16, torch.tensor([cy]), torch.tensor([cx]))
    assert np.array_equal(pil, batch[0].permute(1, 2, 0).numpy())


# -- CTAugment --------------------------------------------------------------------------------------
def test_ctaugment_batch_variants_are_its_parts():
    x = _images()
    cta = BatchedCTAugment()
    no_cut = cta.strong(x, _gen(5), with_cutout=False)
    g = _gen(5)
    ops, values = cta.policy(len(x), g, probe=False)
    assert torch.equal(no_cut, apply_policy_batch(x, ops, values, g))
    assert torch.equal(cta.strong(x, _gen(5)), cutout_level(no_cut, 1.0, g))  # full = the ops, then the box
    only = CTAugmentPolicy(with_ops=False).strong_batch(x, _gen(6))
    assert torch.equal(only, cutout_level(x, 1.0, _gen(6)))
    _assert_one_gray_box(x, only, 16, fill=CTA_FILL[0])  # official CTAugment cutout: 127


def test_ctaugment_pil_variants_are_its_parts():
    from fixmatch_ray.data.policies import ctaugment as ref

    img = _pil(_images())
    only = CTAugmentPolicy(with_ops=False).strong_image(img, np.random.default_rng(2))
    assert np.array_equal(np.asarray(only), np.asarray(ref.cutout(img, 1.0, np.random.default_rng(2))))
    no_cut = CTAugmentPolicy(with_cutout=False).strong_image(img, np.random.default_rng(2))
    rng = np.random.default_rng(2)
    expect = ref.apply(img, ref.CTAugment().policy(rng, probe=False), rng)
    assert np.array_equal(np.asarray(no_cut), np.asarray(expect))
    full = CTAugmentPolicy().strong_image(img, np.random.default_rng(2))
    assert np.array_equal(np.asarray(full), np.asarray(ref.cutout(expect, 1.0, rng)))


def test_policy_parts_are_checked():
    with pytest.raises(ValueError, match="unknown strong_aug 'half'"):
        build_policy("randaugment", strong_aug="half")
    with pytest.raises(ValueError, match="needs its ops, its Cutout or both"):
        RandAugment(with_ops=False, with_cutout=False)
    p = build_policy("ctaugment", strong_aug="no_cutout")
    assert isinstance(p, CTAugmentPolicy) and (p.with_ops, p.with_cutout) == (True, False)


# -- anchoring ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("anchoring", ["weak.strong", "weak.weak", "strong.strong", "strong.weak"])
def test_pil_anchoring_makes_the_named_views_in_order(anchoring):
    img = _pil(_images())
    t = ViewTransform(MEAN, STD, flip=True, unlabeled=tuple(anchoring.split(".")))
    first, second = t.unlabeled(img, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    expect = []
    for kind in anchoring.split("."):
        v = weak_augment(img, rng, True)
        expect.append(to_tensor(rand_augment_mc(v, rng) if kind == "strong" else v, MEAN, STD))
    assert torch.equal(first, expect[0]) and torch.equal(second, expect[1])


@pytest.mark.parametrize("anchoring", ["weak.strong", "weak.weak", "strong.strong", "strong.weak"])
def test_batched_anchoring_makes_the_named_views_in_order(anchoring):
    x = _images()
    store, idx = CropStore(x, flip=True, max_bytes=0), torch.arange(len(x))
    aug = BatchAugmenter(MEAN, STD, flip=True, unlabeled=tuple(anchoring.split(".")))
    first, second = aug.unlabeled(store, idx, _gen(8))
    g = _gen(8)
    expect = [(aug.strong if kind == "strong" else aug.weak)(store, idx, g) for kind in anchoring.split(".")]
    assert torch.equal(first, expect[0]) and torch.equal(second, expect[1])
    # a weak view carries no Cutout box; a strong one does (one per sample, at least 8×8 inside)
    gray = [((v * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255).round()
            .eq(FILL).all(1).flatten(1).sum(1) for v in (first, second)]
    for kind, count in zip(anchoring.split("."), gray):
        assert (count >= 8 * 8).all() if kind == "strong" else (count == 0).all()


def test_default_anchoring_is_the_old_weak_then_strong_stream():
    """Bit-identical default: weak draws first, then the strong view with its own weak step."""
    img = _pil(_images())
    w, s = ViewTransform(MEAN, STD, flip=True).unlabeled(img, np.random.default_rng(1))
    rng = np.random.default_rng(1)
    assert torch.equal(w, to_tensor(weak_augment(img, rng, True), MEAN, STD))
    assert torch.equal(s, to_tensor(rand_augment_mc(weak_augment(img, rng, True), rng), MEAN, STD))


def test_fixmatch_anchoring_names_its_views():
    from fixmatch_ray.algorithms import FixMatch, Views

    assert FixMatch.views(FixMatch.Options(anchoring="strong.weak")) == Views(("weak",), ("strong", "weak"))
    assert FixMatch.views(FixMatch.Options()) == Views(labeled=("weak",), unlabeled=("weak", "strong"))
    assert check_views(("weak",) * 3, "unlabeled") == ("weak", "weak", "weak")
    for bad in ((), ("weak", "medium")):
        with pytest.raises(ValueError, match="unlabeled views .*: expected one or more of weak, strong"):
            check_views(bad, "unlabeled")


KS = [("weak",) * 3, ("weak", "strong", "strong", "strong"), ("strong", "weak")]


@pytest.mark.parametrize("kinds", KS)
def test_pil_k_views_each_draw_after_the_one_before(kinds):
    """Any number of views (MixMatch's K weak, ReMixMatch's weak + K strong): view i is view i's own
    weak step (and the policy for a strong one), drawn from the sample's generator after view i-1."""
    img = _pil(_images())
    t = ViewTransform(MEAN, STD, flip=True, labeled=kinds, unlabeled=kinds)
    got = t.unlabeled(img, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    expect = []
    for kind in kinds:
        v = weak_augment(img, rng, True)
        expect.append(to_tensor(rand_augment_mc(v, rng) if kind == "strong" else v, MEAN, STD))
    assert len(got) == len(kinds) and all(torch.equal(a, b) for a, b in zip(got, expect))
    assert all(torch.equal(a, b) for a, b in zip(t.labeled(img, np.random.default_rng(3)), expect))
    assert len({tuple(v.flatten()[:64].tolist()) for v in got}) == len(kinds)  # each view its own draws


@pytest.mark.parametrize("kinds", KS)
def test_batched_k_views_each_draw_after_the_one_before(kinds):
    x = _images()
    store, idx = CropStore(x, flip=True, max_bytes=0), torch.arange(len(x))
    aug = BatchAugmenter(MEAN, STD, flip=True, unlabeled=kinds)
    got = aug.unlabeled(store, idx, _gen(5))
    g, expect = _gen(5), []
    for kind in kinds:  # the primitives, in the order the views name them
        crop = store.crop(idx, g)
        expect.append(normalize(rand_augment_batch(crop, g) if kind == "strong" else crop, MEAN, STD))
    assert len(got) == len(kinds) and all(torch.equal(a, b) for a, b in zip(got, expect))
