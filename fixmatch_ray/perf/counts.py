"""What one training step asks of a GPU, counted by the code, not typed in.

For a network (model key, image side) and a precision, the forward and backward pass is run on fake
tensors (``FakeTensorMode``: shapes, dtypes and the real ATen ops, no data, no device) and every ATen
op is logged with its FLOPs (``torch.utils.flop_counter``'s formulas: convolutions and matmuls) and
its bytes: the sizes of its tensor inputs and outputs (a lower bound of the memory traffic: a kernel
reads each input and writes each output at least once; views and allocations move nothing and are
not counted). Run at two and at three images, each op's counts split into a part per image and a
fixed part (the weights it reads), so a step of any batch follows. ``bf16`` is counted under
autocast (CPU's autocast casts the same convolutions to bf16 as CUDA's); fp16 moves the same bytes.

The augmentation of a step on the device path (weak views, the strong view, CTAugment's probes) is
counted the same way, per policy, on a fake CUDA device (its dense path: every op runs on every
sample, so the op count does not depend on the batch). The counts are slow to make (a minute), so
they are kept in ``counts.json`` beside this module: ``python -m fixmatch_ray.bench costs`` writes
it, and a test checks that a fresh count equals what it holds.
"""
from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

COUNTS_FILE = Path(__file__).with_name("counts.json")
PRECISIONS = ("fp32", "bf16")  # what is counted; fp16 moves what bf16 moves
# model key -> (run-config shape, image side, classes): the networks of the sweep files
MODELS: dict[str, tuple[dict[str, Any], int, int]] = {
    "wideresnet-28-2": ({"arch": "wideresnet", "depth": 28, "width": 2}, 32, 10),
    "wideresnet-28-8": ({"arch": "wideresnet", "depth": 28, "width": 8}, 32, 100),
    "wideresnet-46-2-s5": ({"arch": "wideresnet", "depth": 46, "width": 2, "scales": 5}, 96, 10),
    "resnext-29-4-c4": ({"arch": "resnext", "depth": 29, "width": 4, "cardinality": 4}, 32, 10),
    "resnext-29-64-c8": ({"arch": "resnext", "depth": 29, "width": 64, "cardinality": 8}, 32, 100),
}
POLICY_SHAPE = {"batch_size": 64, "mu": 7, "image_size": 32}  # the paper's step, where augmentation is counted
NO_TRAFFIC = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided"}


def _moves_data(func) -> bool:
    """False for views and metadata ops (their outputs alias an input without writing it) and
    allocations; True for every op that runs a kernel."""
    name = func.overloadpacket.__name__
    if name in NO_TRAFFIC:
        return False
    returns = func._schema.returns
    if not returns:
        return True
    return not all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


def clear_device_caches() -> None:
    """Empty the tables the data path caches per device (``lru_cache``): built under fake tensors
    they hold fake tensors, which a later real run on that device would read."""
    for name, module in list(sys.modules.items()):
        if name.startswith("fixmatch_ray"):
            for obj in list(vars(module).values()):
                if callable(getattr(obj, "cache_clear", None)) and obj is not load_counts:
                    obj.cache_clear()


@contextlib.contextmanager
def fake_tensors():
    """``FakeTensorMode`` (real inputs allowed) that leaves no fake tensor in a per-device cache."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    clear_device_caches()
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            yield
    finally:
        clear_device_caches()


def _op_logger():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import flop_registry

    class OpLog(TorchDispatchMode):
        """Every data-moving ATen op: (name, FLOPs, bytes)."""

        def __init__(self):
            super().__init__()
            self.ops: list[tuple[str, int, int]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            # an op with neither a tensor output nor an input it writes (foreach ops write in place)
            # reads metadata only
            if (outputs or func._schema.is_mutable) and _moves_data(func):
                tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)] + outputs
                nbytes = sum(t.numel() * t.element_size() for t in tensors)
                counter = flop_registry.get(func.overloadpacket)
                flops = int(counter(*args, **kwargs, out_val=out)) if counter else 0
                self.ops.append((func.overloadpacket.__name__, flops, nbytes))
            return out

    return OpLog


DATASET_OF = {"wideresnet-28-2": "cifar10", "wideresnet-28-8": "cifar100", "wideresnet-46-2-s5": "stl10",
              "resnext-29-4-c4": "cifar10", "resnext-29-64-c8": "cifar100"}


def _step_ops(key: str, precision: str, policy: str, batch: int) -> tuple[list[tuple[str, int, int]], int, int]:
    """The ops of one :meth:`.Engine.train_step` (the forward, the loss, the backward, SGD, the EMA
    and, for CTAugment, the probe's forward and the rate update) and the step's bookkeeping, at
    ``batch`` labeled images (μ = 7); the bytes autograd saves for the backward; the parameters."""
    import torch

    from ..config import RunConfig
    from ..data.policies import build_policy
    from ..training.engine import Engine, StepSums

    shape, size, _ = MODELS[key]
    cfg = RunConfig(dataset=DATASET_OF[key], num_labeled=1000 if DATASET_OF[key] == "stl10" else 400, seed=1,
                    batch_size=batch, mu=POLICY_SHAPE["mu"], amp="bf16" if precision == "bf16" else "off",
                    policy=policy, aug_backend="tensor", num_workers=0, **shape)
    cpu, pol = torch.device("cpu"), build_policy(policy)
    trainer = Engine(cfg, cpu, num_unlabeled=1000, policy=pol)
    log, saved = _op_logger()(), {}

    def pack(t):  # a tensor kept by several ops (a block's input) is held once
        storage = t.untyped_storage()
        saved[storage._cdata] = storage.nbytes()
        return t

    n_ulb = batch * cfg.mu
    with fake_tensors():
        image = lambda n: torch.empty(n, 3, size, size)  # noqa: E731
        views = cfg.views  # the algorithm's: one tensor per view
        step = {"x_lb": [image(batch) for _ in views.labeled], "y_lb": torch.zeros(batch, dtype=torch.long),
                "x_ulb": [image(n_ulb) for _ in views.unlabeled], "idx_ulb": torch.zeros(n_ulb, dtype=torch.long)}
        if pol.learns:
            step.update(x_probe=image(batch), probe=(torch.zeros(batch, 2, dtype=torch.long),
                                                     torch.zeros(batch, 2, 2, dtype=torch.float64)))
        acc = StepSums(cpu)
        for counted in (False, True):  # the first step builds the policy's lazy tables
            log.ops.clear()
            saved.clear()
            hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            with log if counted else contextlib.nullcontext(), hooks:
                loss, metrics = trainer.train_step(step)
                acc.add(0, loss, metrics)
    return log.ops, sum(saved.values()), sum(p.numel() for p in trainer.net.parameters())


def count_model(key: str, precision: str, policy: str = "randaugment") -> dict[str, Any]:
    """Per-op counts of one training step of network ``key`` with ``policy``'s step-side work: each
    distinct op as ``[name, FLOPs per image, fixed FLOPs, bytes per image, fixed bytes, how many]``
    (images: the step's B·(1 + 2μ)), the bytes autograd keeps for the backward per image
    (saved-tensor hooks: the activations, the step's largest memory need) and the parameters."""
    mu = POLICY_SHAPE["mu"]
    (two, saved2, params), (three, saved3, _) = (_step_ops(key, precision, policy, b) for b in (2, 3))
    if [o[0] for o in two] != [o[0] for o in three]:
        raise RuntimeError(f"{key}: the op sequence depends on the batch; cannot split per image")
    i2, i3 = 2 * (1 + 2 * mu), 3 * (1 + 2 * mu)
    per = lambda a, b: (b - a) / (i3 - i2)  # noqa: E731
    ops = Counter((a[0], per(a[1], b[1]), a[1] - i2 * per(a[1], b[1]), per(a[2], b[2]), a[2] - i2 * per(a[2], b[2]))
                  for a, b in zip(two, three))
    return {"ops": [[*k, n] for k, n in sorted(ops.items())], "saved_bytes_per_image": per(saved2, saved3),
            "params": params}


def _augmentation_ops(policy: str) -> list[tuple[str, int, int]]:
    """The device path's augmentation of one step at :data:`POLICY_SHAPE`, on a fake CUDA device."""
    import torch

    from ..data.batched import BatchAugmenter
    from ..data.datasets import get_spec
    from ..data.policies import build_policy

    b, mu, size = POLICY_SHAPE["batch_size"], POLICY_SHAPE["mu"], POLICY_SHAPE["image_size"]
    cuda, spec, gen = torch.device("cuda", 0), get_spec("cifar10"), torch.Generator()
    log = _op_logger()()
    with fake_tensors():
        pol = build_policy(policy, cuda)
        aug = BatchAugmenter(spec.mean, spec.std, flip=True, policy=pol)
        store = aug.store(torch.empty(2 * b * mu, 3, size, size, dtype=torch.uint8, device=cuda))
        lb, ulb = torch.arange(b, device=cuda), torch.arange(b, b + b * mu, device=cuda)
        for counted in (False, True):  # the first pass builds the per-device tables
            log.ops.clear()
            with log if counted else contextlib.nullcontext():
                weak = store.crop(lb, gen)
                aug.unlabeled(store, ulb, gen)
                if pol.learns:
                    aug.normalize(pol.probe_batch(weak, gen)[0])
                aug.normalize(weak)
    return log.ops


def count_augmentation(policy: str) -> dict[str, Any]:
    """Each distinct op (name, bytes, how many) of one step's augmentation on the device path, at
    :data:`POLICY_SHAPE`."""
    ops = Counter((o[0], o[2]) for o in _augmentation_ops(policy))
    return {"ops": [[name, nbytes, n] for (name, nbytes), n in sorted(ops.items())], **POLICY_SHAPE}


def count_all(models: list[str] | None = None, policies: tuple[str, ...] = ("randaugment", "ctaugment")) -> dict:
    """Everything :data:`COUNTS_FILE` holds (for ``models``, default all), with the torch version."""
    import torch

    return {"torch": torch.__version__.split("+")[0],
            "models": {k: {pol: {p: count_model(k, p, pol) for p in PRECISIONS} for pol in policies}
                       for k in (models or MODELS)},
            "augmentation": {p: count_augmentation(p) for p in policies}}


@functools.lru_cache(maxsize=1)
def load_counts() -> dict[str, Any]:
    """The kept counts (``counts.json``)."""
    return json.loads(COUNTS_FILE.read_text(encoding="utf-8"))


def ops_at(counts: dict[str, Any], images: int) -> Iterator[tuple[str, float, float, int]]:
    """(name, FLOPs, bytes, how many) of each distinct op of a step of ``images`` images."""
    for name, f1, f0, b1, b0, n in counts["ops"]:
        yield name, f1 * images + f0, b1 * images + b0, n
