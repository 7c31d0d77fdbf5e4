"""The stated step-time and memory model, by hand on made-up counts and a data sheet's numbers."""
from __future__ import annotations

import pytest

from fixmatch_ray.perf import estimate
from fixmatch_ray.perf.cards import CARDS, accelerator_card, find_card

KEY = "wideresnet-28-2"  # the image side (32) comes from the network's entry
COUNTS = {"models": {KEY: {"randaugment": {
    "fp32": {"ops": [["convolution", 1e9, 0, 1e6, 0, 1],  # 1 GFLOP and 1 MB an image
                     ["add", 0, 0, 4e6, 1e5, 10]],  # 10 memory-bound ops of 4 MB an image + 0.1 MB
             "saved_bytes_per_image": 2**20, "params": 1_000_000}}}},
    "augmentation": {"randaugment": {"ops": [["index_select", 96_000_000, 5]], "batch_size": 64, "mu": 7,
                                     "image_size": 32}}}


@pytest.fixture(autouse=True)
def made_up_counts(monkeypatch):
    monkeypatch.setattr(estimate, "load_counts", lambda: COUNTS)


def test_one_step_on_an_h100_by_hand():
    images = 96  # a tenth of the reference step's 960
    peak, bw = 494.7e12 * 0.6, 3.35e12 * 0.8  # TF32 dense at 60 %, HBM3 at 80 %
    conv = max(1e9 * images / peak, 1e6 * images / bw, 2e-6)  # 323 us: compute-bound
    add = 10 * max((4e6 * images + 1e5) / bw, 2e-6)  # 1.43 ms
    aug = 5 * max(96e6 * (images / 960) / bw, 2e-6)  # 5 x 3.6 us
    e = estimate.step_estimate(KEY, "off", "randaugment", images)
    assert e.gpu_ms == pytest.approx(1e3 * (conv + add + aug))
    assert e.host_ms == pytest.approx(1e3 * (11 * 8e-6 + 20e-6))  # 11 eager kernels + one graph replay
    assert e.ms == e.gpu_ms and e.kernels == 12
    eager = estimate.step_estimate(KEY, "off", "randaugment", images, cuda_graphs=False)
    assert eager.host_ms == pytest.approx(1e3 * 16 * 8e-6) and eager.kernels == 16
    ieee = estimate.step_estimate(KEY, "ieee", "randaugment", images)  # 67 TFLOP/s on CUDA cores
    assert ieee.gpu_ms == pytest.approx(1e3 * (1e9 * images / (67e12 * 0.6) + add + aug))


def test_bf16_compile_ddp_and_a_host_bound_step():
    # bf16 on an H100: the fp32 counts stand in here (made-up file has no bf16 entry): skip to compile
    images = 96
    bw = 3.35e12 * 0.8
    c = estimate.step_estimate(KEY, "off+compile", "randaugment", images)
    add = 10 * 0.4 * max((4e6 * images + 1e5) * 0.5 / bw, 2e-6)  # half the traffic, 40 % of the kernels
    conv = max(1e9 * images / (494.7e12 * 0.6), 1e6 * images / bw, 2e-6)
    aug = 5 * max(96e6 * 0.1 / bw, 2e-6)
    assert c.gpu_ms == pytest.approx(1e3 * (conv + add + aug))
    two = estimate.step_estimate(KEY, "off", "randaugment", images, workers=2)
    half = max(1e9 * 48 / (494.7e12 * 0.6), 1e6 * 48 / bw, 2e-6) + 10 * max((4e6 * 48 + 1e5) / bw, 2e-6) \
        + 5 * max(96e6 * 0.1 / 2 / bw, 2e-6) + 2 * 0.5 * 1_000_000 * 4 / 100e9
    assert two.gpu_ms == pytest.approx(1e3 * half)
    tiny = estimate.step_estimate(KEY, "off", "randaugment", 1, cuda_graphs=False)  # 16 launches of 8 us
    assert tiny.ms == tiny.host_ms > tiny.gpu_ms  # host-bound: the GPU waits for launches


def test_memory_by_hand(monkeypatch):
    images = 960
    need = estimate.memory_gib(KEY, "off", "randaugment", images, "cifar10")
    activations = 2**20 * images
    largest = 4e6 * images + 1e5  # the add's operands
    weights = 16 * 1_000_000
    store = 50_000 * 3 * 32 * 32 * 18  # 2.76 GB: the 18 crop variants fit 6 GiB
    assert need == pytest.approx((activations + largest + weights + store) / 2**30 + 2.0)
    monkeypatch.setitem(estimate.TRAIN_IMAGES, "big", 200_000)  # 18 variants: 11 GB > 6 GiB, kept once
    big = estimate.memory_gib(KEY, "off", "randaugment", images, "big")
    assert big == pytest.approx((activations + largest + weights + 200_000 * 3 * 32 * 32) / 2**30 + 2.0)


def test_cards_from_device_and_accelerator_names():
    assert find_card("NVIDIA H100 80GB HBM3").name == "H100" and find_card("NVIDIA H200").name == "H200"
    v100 = find_card("Tesla V100-SXM2-16GB")
    assert v100.name == "V100" and v100.memory_gb == 16 and v100.bf16 is None
    assert find_card("NVIDIA A100-SXM4-40GB").memory_gb == 40 and find_card("NVIDIA A10G").name == "A10G"
    assert find_card("NVIDIA L4").name == "L4" and find_card("AMD MI300X") is None
    assert accelerator_card({"GPU": 8, "accelerator_type:A10G": 8}).name == "A10G"
    assert accelerator_card({"accelerator_type:A10G": 1, "accelerator_type:H100": 1}) is None  # mixed: unknown
    assert CARDS["A10G"].memory_gib == pytest.approx(24e9 / 2**30)
    assert CARDS["T4"].tflops("off") == 8.1 and CARDS["H100"].tflops("ieee") == 67.0  # no TF32 on a T4
