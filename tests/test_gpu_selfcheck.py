"""The GPU suite's checks (``gpucheck.py``) run on the CPU: proof that each check calls the real
API and expects what the code does, on a machine without CUDA. ``test_gpu.py`` runs them on CUDA."""
from __future__ import annotations

import pytest
import torch

import gpucheck

CPU = torch.device("cpu")


def test_ops_check_on_the_cpu():
    assert gpucheck.ops_match_the_cpu(CPU, 16) == 14 * 9 * 2


def test_cutout_check_on_the_cpu():
    gpucheck.cutout_matches_the_cpu(CPU)


def test_rand_augment_check_on_the_cpu():
    gpucheck.rand_augment_matches_the_cpu(CPU, n=60, size=16)


@pytest.mark.parametrize("size", [32, 20])
def test_crop_layout_check_on_the_cpu(size):
    gpucheck.crop_layouts_match_their_draws(CPU, size, n=20)


def test_crop_layout_check_fails_on_a_wrong_crop(monkeypatch):
    """The crop check can fail: a store that forgets the mirror is caught."""
    from fixmatch_ray.data.batched import CropStore

    real = CropStore.crop
    monkeypatch.setattr(CropStore, "crop", lambda self, index, gen, rows=None: real(self, index, gen, rows).flip(3))
    with pytest.raises(AssertionError):
        gpucheck.crop_layouts_match_their_draws(CPU, 16, n=8)


def test_device_batches_check_on_the_cpu():
    batch = gpucheck.device_batches_are_keyed_and_sliced(CPU)
    assert batch["x_lb"][0].device == CPU


@pytest.mark.parametrize("amp, dtype", [("off", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_check_on_the_cpu(amp, dtype):
    assert gpucheck.amp_dtypes(CPU, amp) == dtype


def test_layout_check_on_the_cpu():
    assert gpucheck.layout_and_optimizer(CPU) == {"channels_last": True, "fused": False, "foreach": True}


def test_checkpoint_check_on_the_cpu(tmp_path):
    state = gpucheck.checkpoint_round_trip(CPU, tmp_path)
    assert set(state["rng"]) == {"torch"}


@pytest.mark.ray
def test_trial_probe_on_the_cpu(ray_session, tmp_path):
    """The probe the Ray GPU tests read: a CPU trial of the real entry point reports its device,
    CUDA untouched, and gloo."""
    from fixmatch_ray.config import Resources

    cfg = gpucheck.CFG.replace(total_steps=4, eval_step=2)
    (rank0,) = gpucheck.probed_run(cfg, Resources(workers=1, cpus_per_worker=1), tmp_path, "cpu")
    assert rank0 == {"rank": 0, "cuda_initialized": False, "device": "cpu", "backend": "gloo"}
