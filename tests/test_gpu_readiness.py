"""The first-GPU-run failures a review predicted, checked on the CPU: fractional GPUs under DDP
refused, resume without per-device CUDA RNG states, the grad scaler across precisions, optimizer
kernels across device types, ``amp: auto`` on GPUs without native bf16, the precision a run
records, and CPU trials that never open a CUDA context on a GPU node (availability mocked)."""
from __future__ import annotations

import pytest
import torch

from fixmatch_ray.config import ConfigError, RunConfig
from fixmatch_ray.training.engine import Engine

CPU = torch.device("cpu")
TINY = RunConfig(dataset="digits", num_labeled=20, batch_size=4, mu=2, depth=10, width=1, seed=0, total_steps=10,
                 eval_step=5, num_workers=0, device="cpu", ema_decay=0.9)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x_lb": [torch.randn(4, 3, 16, 16, generator=g)], "y_lb": torch.tensor([0, 1, 2, 3]),
            "x_ulb": [torch.randn(8, 3, 16, 16, generator=g), torch.randn(8, 3, 16, 16, generator=g)],
            "idx_ulb": torch.arange(8)}


# -- failure 1: fractional GPUs with several DDP workers -----------------------------------------
def test_sweep_with_fractional_gpus_under_ddp_is_one_line_naming_the_file(tmp_path):
    from fixmatch_ray.config import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text("name: x\ngrid: [{dataset: digits, num_labeled: 20}]\n"
                    "resources: {workers: 2, gpus_per_worker: 0.5}\n")
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "gpus_per_worker: 0.5 with 2 workers" in msg and "\n" not in msg
    assert "NCCL" in msg and "gpus_per_worker: 1" in msg  # says why and what would be right


# -- failure 2: CUDA RNG states of another node ---------------------------------------------------
def test_old_checkpoint_with_more_cuda_rng_states_restores_without_touching_cuda(monkeypatch):
    """A checkpoint saved on an 8-GPU node (older format: ``rng.cuda`` per device) resumes on a
    node with fewer (here none): nothing draws from the CUDA RNG, so its states are ignored."""
    def refuse(*args, **kwargs):
        raise AssertionError("CUDA RNG touched")

    saved = Engine(TINY, CPU, num_unlabeled=50)
    saved.train_step(_batch())
    state = saved.state_dict()
    assert set(state["rng"]) == {"torch"}  # new checkpoints carry the CPU state only
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 8
    for name in ("set_rng_state_all", "set_rng_state", "get_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, refuse)
    torch.manual_seed(123)  # a different global state than the saved one
    restored = Engine(TINY, CPU, num_unlabeled=50)
    restored.load_state_dict(state)
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])
    assert restored.step == 1


# -- failure 3: the grad scaler across precisions --------------------------------------------------
@pytest.mark.parametrize("saved_amp, resumed_amp", [("bf16", "fp16"), ("fp16", "bf16"), ("off", "fp16"),
                                                    ("fp16", "fp16")])
def test_scaler_state_moves_between_precisions(saved_amp, resumed_amp):
    """bf16 on one card, fp16 + GradScaler on the next (and back): the resumed run starts a fresh
    scale where the checkpoint has none, ignores one it cannot use, restores one it can; and steps."""
    saved = Engine(TINY.replace(amp=saved_amp), CPU, num_unlabeled=50)
    saved.train_step(_batch())
    state = saved.state_dict()
    if saved_amp == "fp16":
        state["scaler"]["scale"] = 1024.0  # as if it had backed off
    else:
        assert state["scaler"] == {}  # a disabled scaler saves nothing: the case that used to fail
    resumed = Engine(TINY.replace(amp=resumed_amp), CPU, num_unlabeled=50)
    resumed.load_state_dict(state)
    if resumed_amp == "fp16":
        assert resumed.scaler.get_scale() == (1024.0 if saved_amp == "fp16" else 65536.0)
    loss, _ = resumed.train_step(_batch(1))
    assert torch.isfinite(loss) and resumed.step == 2


# -- failure 4: CPU trials on a GPU node ------------------------------------------------------------
@pytest.fixture
def gpu_node_without_cuda_use(monkeypatch):
    """CUDA "available" (a GPU node), but any CUDA initialisation fails the test."""
    def refusal(name: str):
        def refuse(*args, **kwargs):  # one function per name: torch's tracing rules key on identity
            raise AssertionError(f"a CPU-only trial called torch.cuda.{name}")
        return refuse

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in ("init", "_lazy_init", "set_device", "synchronize", "current_device"):
        monkeypatch.setattr(torch.cuda, name, refusal(name))
    yield
    assert not torch.cuda.is_initialized()


@pytest.mark.parametrize("backend, workers", [("pil", 0), ("pil", 2), ("tensor", 0)])
def test_cpu_trial_on_a_gpu_node_never_initialises_cuda(gpu_node_without_cuda_use, tmp_path, backend, workers):
    from fixmatch_ray.training.loop import run_local

    cfg = TINY.replace(aug_backend=backend, num_workers=workers, out=str(tmp_path / "run"))
    summary = run_local(cfg, progress=False)
    assert summary["evals"] == 2


def test_pinned_loader_only_for_a_cuda_device(monkeypatch):
    """The PIL loader pins its batches for a CUDA training device only (pinning opens a context)."""
    from fixmatch_ray.training import loop

    seen = {}

    def fake_loader(*args, **kwargs):
        seen["pin_memory"] = kwargs["pin_memory"]
        return []

    monkeypatch.setattr(loop, "train_loader", fake_loader)
    data = loop.load_run_data(TINY)
    for device, pinned in ((CPU, False), (torch.device("cuda", 1), True)):
        loop.step_batches(TINY.replace(aug_backend="pil"), data, 0, device=device)
        assert seen["pin_memory"] is pinned


def test_gpu_id_selects_the_device_before_anything_runs(monkeypatch, tmp_path):
    """``--gpu-id N`` (device cuda:N) calls ``torch.cuda.set_device(N)`` first, so kernels, caches and
    NCCL use GPU N, not GPU 0 (the training itself is stubbed out: no GPU here)."""
    from fixmatch_ray.training import loop

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(torch.device(d)))
    monkeypatch.setattr(loop, "run_training", lambda cfg, device, *a, **k: calls.append(("run", device)) or
                        type("T", (), {"history": []})())
    loop.run_local(TINY.replace(device="cuda:1", out=str(tmp_path / "r")), progress=False)
    assert calls == [torch.device("cuda", 1), ("run", torch.device("cuda", 1))]


# -- the device path by default on a GPU -----------------------------------------------------------
def test_aug_backend_auto_is_tensor_on_a_gpu_and_pil_on_the_cpu():
    cfg = RunConfig()
    assert cfg.aug_backend == "auto"
    assert cfg.aug_backend_for("cuda") == "tensor" and cfg.aug_backend_for("cpu") == "pil"
    assert cfg.replace(aug_backend="pil").aug_backend_for("cuda") == "pil"  # an explicit setting wins
    assert cfg.replace(aug_backend="tensor").aug_backend_for("cpu") == "tensor"
    assert cfg.replace(policy="ctaugment").aug_backend_for("cpu") == "tensor"  # a learning policy needs it
    with pytest.raises(ConfigError, match="policy ctaugment does not implement the pil backend .*learns during "
                                          "training.*use aug_backend: auto or tensor"):
        RunConfig(policy="ctaugment", aug_backend="pil")


def test_a_run_records_the_backend_that_ran(tmp_path):
    import json

    from fixmatch_ray.training.checkpoint import load_checkpoint
    from fixmatch_ray.training.loop import run_local

    out = tmp_path / "run"
    run_local(TINY.replace(total_steps=2, eval_step=2, out=str(out)), progress=False)
    assert json.loads((out / "metrics.json").read_text())["config"]["aug_backend"] == "pil"
    assert load_checkpoint(out)[0]["config"]["aug_backend"] == "pil"
    assert "aug_backend: pil" in (out / "config.yaml").read_text()


def test_paper_sweep_trains_on_the_device_path():
    from pathlib import Path

    from fixmatch_ray.config import load_sweep

    spec = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml")
    assert {t.run.aug_backend for t in spec.trials} == {"tensor"} and len(spec.trials) == 30


# -- amp: auto on GPUs without native bf16 ---------------------------------------------------------
@pytest.mark.parametrize("capability, dtype", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                               ((8, 0), torch.bfloat16), ((8, 6), torch.bfloat16),
                                               ((9, 0), torch.bfloat16)])
def test_amp_auto_takes_bf16_only_with_native_bf16(monkeypatch, capability, dtype):
    """V100 (7.0) and T4 (7.5) emulate bf16 (``is_bf16_supported()`` still says yes there): fp16 +
    GradScaler; A100 (8.0), A10G (8.6), H100 (9.0): bf16. The CPU: bf16."""
    from fixmatch_ray.training.engine import amp_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert amp_dtype("auto", torch.device("cuda", 0)) == dtype
    assert amp_dtype("auto", CPU) == torch.bfloat16
    assert amp_dtype("bf16", torch.device("cuda", 0)) == torch.bfloat16  # asked for: given
    assert amp_dtype("off", torch.device("cuda", 0)) is None


# -- optimizer kernels after a resume on another device type ---------------------------------------
def test_a_resumed_optimizer_keeps_the_kernels_chosen_for_its_device():
    """A checkpoint from a GPU (fused SGD) resumed on the CPU runs foreach SGD, and a CPU one
    (foreach) resumed on a GPU would run fused: load_state_dict alone takes the saved flags."""
    saved = Engine(TINY, CPU, num_unlabeled=50)
    saved.train_step(_batch())
    state = saved.state_dict()
    for group in state["optimizer"]["param_groups"]:  # as a CUDA run saves them
        group.update(fused=True, foreach=None)
    plain = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, foreach=True)
    plain.load_state_dict({"state": {}, "param_groups": [{**state["optimizer"]["param_groups"][0], "params": [0]}]})
    assert plain.param_groups[0]["fused"] is True  # what torch does without the reset
    resumed = Engine(TINY, CPU, num_unlabeled=50)
    resumed.load_state_dict(state)
    assert [(g["fused"], g["foreach"]) for g in resumed.optimizer.param_groups] == [(None, True)] * 2
    assert resumed.optimizer.param_groups[0]["lr"] == state["optimizer"]["param_groups"][0]["lr"]
    assert torch.equal(resumed.optimizer.state_dict()["state"][0]["momentum_buffer"],
                       saved.optimizer.state_dict()["state"][0]["momentum_buffer"])
    resumed.train_step(_batch(1))
    assert resumed.step == 2


# -- the precision a run states ---------------------------------------------------------------------
@pytest.mark.parametrize("amp, tf32, cuda_name, cpu_name", [
    ("off", True, "fp32 (TF32 convolutions and matmuls) on cuda (NVIDIA H100 80GB HBM3)", "fp32 (CPU)"),
    ("off", False, "IEEE fp32 on cuda (NVIDIA H100 80GB HBM3)", "fp32 (CPU)"),
    ("bf16", True, "bf16 autocast on cuda (NVIDIA H100 80GB HBM3)", "bf16 autocast (CPU)"),
    ("fp16", True, "fp16 autocast + GradScaler on cuda (NVIDIA H100 80GB HBM3)", "fp16 autocast + GradScaler (CPU)"),
])
def test_precision_names(monkeypatch, amp, tf32, cuda_name, cpu_name):
    from fixmatch_ray.training.engine import amp_dtype, precision_name

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    cfg, cuda = TINY.replace(amp=amp, tf32=tf32), torch.device("cuda", 0)
    assert precision_name(cfg, cuda, amp_dtype(amp, cuda)) == cuda_name
    assert precision_name(cfg, CPU, amp_dtype(amp, CPU)) == cpu_name


@pytest.mark.parametrize("tf32, mode", [(True, "tf32"), (False, "ieee")])
def test_tf32_is_set_in_one_place_for_cuda_and_left_alone_on_the_cpu(tf32, mode):
    from fixmatch_ray.training.engine import set_precision

    backends = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    before = [b.fp32_precision for b in backends]
    try:
        for b in backends:
            b.fp32_precision = "none"
        set_precision(TINY.replace(tf32=tf32), CPU)
        assert [b.fp32_precision for b in backends] == ["none", "none"]
        set_precision(TINY.replace(tf32=tf32), torch.device("cuda", 0))
        assert [b.fp32_precision for b in backends] == [mode, mode]
    finally:
        for b, value in zip(backends, before):
            b.fp32_precision = value


def test_a_cpu_run_records_its_precision_and_a_resume_elsewhere_says_both(tmp_path):
    import json

    from fixmatch_ray.training.checkpoint import load_checkpoint
    from fixmatch_ray.training.loop import run_local

    out = tmp_path / "run"
    run_local(TINY.replace(total_steps=2, eval_step=2, out=str(out)), progress=False)
    assert json.loads((out / "metrics.json").read_text())["precision"] == "fp32 (CPU)"
    state, _ = load_checkpoint(out)
    assert state["precision"] == "fp32 (CPU)"
    resumed = Engine(TINY.replace(amp="bf16"), CPU, num_unlabeled=50)
    resumed.load_state_dict(state)
    assert resumed.precision == "bf16 autocast (CPU) (steps before 2: fp32 (CPU))"
