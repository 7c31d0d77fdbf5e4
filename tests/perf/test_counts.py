"""The plan's counts are the code's: FLOPs against a hand count of WRN-28-2, and the kept file
(``perf/counts.json``) equal to a fresh count."""
from __future__ import annotations

import pytest

from fixmatch_ray.perf.counts import count_augmentation, count_model, load_counts


def wrn_convs(depth: int, width: int, side: int = 32) -> list[tuple[int, int, int, int]]:
    """(in channels, out channels, kernel side, output side) of every convolution of a 3-stage
    WRN-depth-width (the official layout: a 3x3 stem of 16, then per stage n blocks of two 3x3
    convolutions, the first block of a stage with a 1x1 shortcut, stride 2 from stage 2 on)."""
    n = (depth - 4) // 6
    convs, c_in = [(3, 16, 3, side)], 16
    for stage, c in enumerate((16 * width, 32 * width, 64 * width)):
        out = side >> stage
        for block in range(n):
            convs += [(c_in, c, 3, out), (c, c, 3, out)]
            if block == 0 and c_in != c:
                convs.append((c_in, c, 1, out))
            c_in = c
    return convs


def test_wrn_28_2_flops_match_a_hand_count():
    convs = wrn_convs(28, 2)
    assert len(convs) == 1 + 3 * 8 + 3  # 28 convolutions: the stem, 24 in blocks, 3 shortcuts
    conv = sum(2 * ci * co * k * k * s * s for ci, co, k, s in convs)
    fc = 2 * 128 * 10
    forward = conv + fc
    assert forward == 428_706_304  # 0.43 GFLOP/image, not the 0.36 often quoted
    counts = load_counts()["models"]["wideresnet-28-2"]["randaugment"]["fp32"]
    per_image = {}
    for name, f1, _f0, _b1, _b0, n in counts["ops"]:
        per_image[name] = per_image.get(name, 0) + f1 * n
    assert per_image["convolution"] == pytest.approx(conv, rel=1e-12)
    # backward: the input's and the weight's gradient, each a forward's FLOPs; the stem's input needs none
    stem = 2 * 3 * 16 * 9 * 32 * 32
    assert sum(per_image.values()) == pytest.approx(3 * forward - stem, rel=1e-12)


@pytest.mark.slow
def test_the_kept_counts_are_what_the_code_counts_now():
    """``python -m fixmatch_ray.bench costs`` rewrites the file; this fails when it is stale."""
    kept = load_counts()
    assert count_model("wideresnet-28-2", "fp32", "randaugment") == kept["models"]["wideresnet-28-2"]["randaugment"]["fp32"]
    assert count_augmentation("randaugment") == kept["augmentation"]["randaugment"]
    assert set(kept["models"]) == {"wideresnet-28-2", "wideresnet-28-8", "wideresnet-46-2-s5", "resnext-29-4-c4",
                                   "resnext-29-64-c8"}


def test_the_counts_say_what_a_review_counted_by_hand():
    """Kernels of a step's dense augmentation (~290 RandAugment, ~1,800 CTAugment with its probes) and
    the activations autograd keeps for WRN-28-2 at 960 images (3.4 GiB fp32, half that in bf16)."""
    kept = load_counts()
    ra, cta = (sum(n for *_, n in kept["augmentation"][p]["ops"]) for p in ("randaugment", "ctaugment"))
    assert 250 < ra < 330 and 1_600 < cta < 2_000
    saved = {p: kept["models"]["wideresnet-28-2"]["randaugment"][p]["saved_bytes_per_image"] * 960 / 2**30
             for p in ("fp32", "bf16")}
    assert saved["fp32"] == pytest.approx(3.41, abs=0.01) and saved["bf16"] == pytest.approx(saved["fp32"] / 2, rel=1e-3)


def test_counting_leaves_no_fake_tensor_in_the_per_device_tables():
    """Counting runs the data path under fake tensors; a table it cached per device (here the
    normalisation statistics on the CPU) must be a real tensor for the next real run."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor

    from fixmatch_ray.data.normalize import normalize
    from fixmatch_ray.perf.counts import fake_tensors

    with fake_tensors():
        normalize(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    out = normalize(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert not isinstance(out, FakeTensor) and torch.equal(out, torch.full((1, 3, 2, 2), 2.0))
