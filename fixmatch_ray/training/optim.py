"""Optimiser pieces of FixMatch: parameter groups, the cosine schedule, the EMA model.

``lr_at`` is pure (step in, learning rate out) so the schedule is testable by hand and
restores exactly from a step counter; ``ModelEMA`` uses foreach ops (one lerp launch per update,
buffers copied only when the EMA model is read).
"""
from __future__ import annotations

import copy
import math
from typing import Iterable

import torch
from torch import nn

NO_DECAY_KEYS = ("bias", "bn")  # the official code: no weight decay on biases and BatchNorm


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two SGD groups: decayed weights, and biases/BatchNorm parameters without decay.

    Names are matched like the reference implementation (``"bias"`` or ``"bn"`` in the name) and
    BatchNorm modules are also recognised by type, so nets that name their norms differently
    are covered.
    """
    norm_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase)
        for p in m.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = id(p) in norm_params or any(k in name for k in NO_DECAY_KEYS)
        (no_decay if skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9, nesterov: bool = True
) -> torch.optim.SGD:
    """SGD with momentum (Nesterov by default) over :func:`param_groups`: one fused kernel on
    CUDA, foreach kernels elsewhere (never a per-tensor Python loop)."""
    on_cuda = next(model.parameters()).is_cuda
    return torch.optim.SGD(
        param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov,
        foreach=None if on_cuda else True, fused=True if on_cuda else None,
    )


def lr_at(
    step: int, base_lr: float, total_steps: int, warmup: int = 0, num_cycles: float = 7 / 16
) -> float:
    """Learning rate at optimisation ``step`` (0-based): linear warmup, then ``lr·cos(7πk/16K)``.

    ``k`` counts steps after warmup and ``K`` the steps after warmup; the paper uses no warmup,
    so the rate decays from ``lr`` to ``lr·cos(7π/16) ≈ 0.195·lr``.
    """
    if step < warmup:
        return base_lr * step / max(1, warmup)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return base_lr * max(0.0, math.cos(math.pi * num_cycles * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply a learning rate to every group (the schedule lives in :func:`lr_at`, not here)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class ModelEMA:
    """Exponential moving average of a model's parameters; buffers (BN statistics) are copied.

    ``ema = decay·ema + (1-decay)·param`` after every optimiser step, as the official code. The
    EMA starts as a copy of the model (not of the first updated weights). The buffers are copied
    when the EMA model is read (:attr:`module`: evaluation, checkpoint, a policy's probe), not
    every step: nothing reads them in between, and the copy mixes dtypes (float statistics, int64
    batch counts), which sends ``_foreach_copy_`` down its per-tensor path (75 launches a step on
    WRN-28-2). What a reader sees is the same: the model's buffers as of the last step.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay {decay} must be in [0, 1)")
        self.decay = decay
        self._source = _unwrap(model)
        self._module = copy.deepcopy(self._source).eval()
        for p in self._module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step of the parameters (a single foreach lerp)."""
        self._source = _unwrap(model)
        ema_p, src_p = _float_pairs(self._module.parameters(), self._source.parameters())
        if ema_p:
            torch._foreach_lerp_(ema_p, src_p, 1.0 - self.decay)

    @property
    def module(self) -> nn.Module:
        """The EMA model, its buffers copied from the model now (one foreach copy per dtype)."""
        with torch.no_grad():
            groups: dict[torch.dtype, tuple[list, list]] = {}
            for dst, src in zip(self._module.buffers(), self._source.buffers(), strict=True):
                pair = groups.setdefault(dst.dtype, ([], []))
                pair[0].append(dst)
                pair[1].append(src)
            for dst, src in groups.values():
                torch._foreach_copy_(dst, src)
        return self._module

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._module.load_state_dict(state)


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel (``.module``) or torch.compile (``_orig_mod``)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _float_pairs(
    ema: Iterable[torch.Tensor], src: Iterable[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    ema_l, src_l = list(ema), list(src)
    if len(ema_l) != len(src_l):
        raise ValueError("EMA model and model have different parameter lists")
    return ema_l, [s.detach() for s in src_l]
