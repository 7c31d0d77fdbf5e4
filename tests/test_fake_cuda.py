"""A CPU-side guard for the CUDA path, run in CI: the device path (DeviceBatches' indices and
augmentation, the train step with autocast, fused SGD and the scaler, EMA, the loop's per-step
bookkeeping) executed under ``FakeTensorMode`` on a fake ``cuda:0``.

Fake tensors carry a device but no data: an op mixing a CPU and a CUDA tensor raises
(FakeTensorDeviceMismatchError, as on a GPU; 0-dim CPU scalars are allowed, as on a GPU) and so
does any read of a value on the host (``.item()``, ``.tolist()``: DataDependentOutputException;
``nonzero``, boolean masks: DynamicOutputShapeException), which on a GPU would be a host sync per
step. A dispatch mode also logs every host<->device copy: after the first step (which builds and
uploads its tables) a step makes none. Two stand-ins, both
outside this project's code: autograd's engine cannot run a fake CUDA backward without a CUDA
context (pytorch#92627), so ``backward`` gives every parameter a (fake) gradient of its shape;
and the augmentation generator is a CPU one (a CUDA generator needs a driver).
"""
from __future__ import annotations


import pytest
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensor, \
    FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode

from fixmatch_ray.config import RunConfig
from fixmatch_ray.data import batched
from fixmatch_ray.data.policies import build_policy
from fixmatch_ray.perf.counts import clear_device_caches
from fixmatch_ray.training import engine
from fixmatch_ray.training.engine import StepSums, Engine, run_steps
from fixmatch_ray.training.loop import load_run_data, step_batches

CUDA = torch.device("cuda", 0)
CFG = RunConfig(dataset="digits", num_labeled=20, batch_size=8, mu=2, depth=10, width=1, seed=0, total_steps=10,
                eval_step=5, aug_backend="tensor", amp="bf16", num_workers=0)


class Transfers(TorchDispatchMode):
    """Records every copy between the host and the device (``.to``, ``copy_``), in either direction."""

    def __init__(self):
        super().__init__()
        self.log: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten._to_copy.default and isinstance(out, torch.Tensor):
            src, dst = args[0].device.type, out.device.type
        elif func is torch.ops.aten.copy_.default:
            src, dst = args[1].device.type, args[0].device.type
        else:
            return out
        if src != dst:
            self.log.append(f"{func} {src}->{dst} {tuple(out.shape)}")
        return out


@pytest.fixture
def fake_cuda(monkeypatch):
    real_build = engine.build_model

    def build_real(*args, **kwargs):  # real CPU weights, moved to the fake device by the Engine
        with unset_fake_temporarily():
            return real_build(*args, **kwargs)

    def fake_backward(self, *args, **kwargs):
        for p in trainer_params:
            p.grad = torch.zeros_like(p)

    trainer_params: list[torch.Tensor] = []
    # autocast("cuda") stays on (torch.cuda.is_available itself must stay False: fake tensors ask it)
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "fake CUDA")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after
    monkeypatch.setattr(engine, "build_model", build_real)
    monkeypatch.setattr(batched, "device_generator", lambda device: torch.Generator())
    monkeypatch.setattr(torch.Tensor, "backward", fake_backward)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)  # no pinned host memory here
    # fused SGD has no meta kernel in torch: a no-op one (its inputs' devices are still checked
    # by fake tensors before any kernel runs)
    lib = torch.library.Library("aten", "IMPL")
    lib.impl("_fused_sgd_.tensor_lr", lambda *args, **kwargs: None, "Meta")
    lib.impl("_fused_sgd_", lambda *args, **kwargs: None, "Meta")
    clear_device_caches()
    precision = [(b, b.fp32_precision) for b in (torch.backends.cudnn.conv, torch.backends.cuda.matmul)]
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            yield trainer_params
    finally:
        clear_device_caches()
        lib._destroy()
        for backend, value in precision:  # the Engine sets TF32 for its (fake) CUDA device
            backend.fp32_precision = value


@pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")  # deepcopy of the EMA model, in torch
@pytest.mark.parametrize("algorithm, policy, amp", [("fixmatch", "randaugment", "bf16"),
                                                     ("flexmatch", "ctaugment", "bf16"),
                                                     ("fixmatch", "randaugment", "fp16"),
                                                     ("fixmatch", "randaugment", "off")])
def test_device_path_on_fake_cuda_has_no_host_sync_and_no_cpu_tensor(fake_cuda, algorithm, policy, amp):
    cfg = CFG.replace(algorithm=algorithm, policy=policy, amp=amp)
    with unset_fake_temporarily():
        data = load_run_data(cfg)
    policy_obj = build_policy(cfg.policy, CUDA)
    trainer = Engine(cfg, CUDA, num_unlabeled=len(data.train), policy=policy_obj)
    fake_cuda.extend(trainer.net.parameters())
    assert trainer.optimizer.defaults["fused"] and torch.backends.cudnn.benchmark
    batches = step_batches(cfg, data, 0, device=CUDA, policy=policy_obj)
    acc = StepSums(CUDA)
    run_steps(trainer, batches, 1, acc)  # the first step builds and uploads its tables
    with Transfers() as transfers:
        run_steps(trainer, batches, 3, acc)  # later steps see the state the first left
    assert transfers.log == []  # no host<->device copy per step: neither a sync nor a pageable upload
    assert trainer.step == 4 and acc.names
    for t in [acc.sums, acc.bad_step, *trainer.net.parameters(), *trainer.ema.module.parameters(),
              *trainer.algorithm.state_dict().values(), *vars(policy_obj).get("batched", policy_obj).__dict__.values()]:
        if not isinstance(t, torch.Tensor):
            continue
        assert isinstance(t, FakeTensor) and t.device == CUDA
    batch = next(batches)
    assert all(v.device == CUDA for v in batch.values() if isinstance(v, torch.Tensor))
    with pytest.raises(DataDependentOutputException):
        acc.sums.tolist()  # the probe works: a host read is refused


def test_the_guard_catches_a_host_sync_and_a_cpu_tensor(fake_cuda):
    """What the guard is for: a per-step ``.item()`` or a CPU tensor in a CUDA op fails it."""
    from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

    x = torch.ones(4, device=CUDA)
    with pytest.raises(DataDependentOutputException):
        (x.sum() > 0).item()
    with pytest.raises(DynamicOutputShapeException):
        x.nonzero()
    with pytest.raises(DynamicOutputShapeException):
        x[x > 0]
    with pytest.raises(FakeTensorDeviceMismatchError):
        x + torch.ones(4)
    with Transfers() as transfers:
        x.cpu(), torch.tensor([1.0, 2.0], device=CUDA)
    assert transfers.log == ["aten._to_copy.default cuda->cpu (4,)", "aten._to_copy.default cpu->cuda (2,)"]


def test_a_ranks_slice_on_fake_cuda_makes_no_copy(fake_cuda):
    """Rank 1 of 2: its slice's indices and augmentation, every draw made for the whole batch."""
    with unset_fake_temporarily():
        data = load_run_data(CFG)
    batches = step_batches(CFG, data, 0, rank=1, world_size=2, device=CUDA)
    next(batches)
    with Transfers() as transfers:
        batch = next(batches)
    assert transfers.log == [] and batch["x_ulb"][1].shape == (8, 3, 16, 16) and batch["x_ulb"][1].device == CUDA


@pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")
@pytest.mark.parametrize("policy", ["randaugment", "ctaugment"])
def test_the_graphed_augmentation_on_fake_cuda_makes_no_copy(fake_cuda, monkeypatch, policy):
    """The captured path (``cuda_graphs``, on for a CUDA device) with a stand-in for the graph: its
    copies into the graph's inputs and of its outputs stay on the device, and nothing syncs."""
    import gpucheck

    capture = gpucheck.StandInCapture()
    monkeypatch.setattr(batched, "graph_capture", capture)
    cfg = CFG.replace(policy=policy)
    with unset_fake_temporarily():
        data = load_run_data(cfg)
    policy_obj = build_policy(cfg.policy, CUDA)
    batches = step_batches(cfg, data, 0, device=CUDA, policy=policy_obj)
    for _ in range(3):  # eager warm-up steps, then the capture
        next(batches)
    assert batches.graphed and capture.captures == 1
    with Transfers() as transfers:
        batch = next(batches)
    assert transfers.log == [] and capture.replays == 2
    assert all(t.device == CUDA for v in batch.values() for t in (v if isinstance(v, tuple) else (v,))
               if isinstance(t, torch.Tensor))
