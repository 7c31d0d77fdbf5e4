"""Optimiser pieces of FixMatch: parameter groups, the optimisers, the schedules, the EMA model.

``lr_at`` is pure (step in, learning rate out) so the schedule is testable by hand and
restores exactly from a step counter; ``ModelEMA`` uses foreach ops (one lerp launch per update,
buffers copied only when the EMA model is read). SGD is FixMatch's; :class:`TFAdam` and the linear
schedule are the official ablations' (``ab_fixmatch_adam.py``, ``ab_fixmatch_linearlr.py``).
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
    model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9, nesterov: bool = True,
    optimizer: str = "sgd", betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """SGD with momentum (Nesterov by default) over :func:`param_groups`: one fused kernel on
    CUDA, foreach kernels elsewhere (never a per-tensor Python loop). ``optimizer="adam"``:
    :class:`TFAdam` with ``betas`` and the official ablation's ε rule (1e-4 where β2 = 0, else
    1e-8); momentum and nesterov are unused then."""
    if optimizer == "adam":
        return TFAdam(param_groups(model, weight_decay), lr=lr, betas=betas, eps=1e-4 if betas[1] == 0 else 1e-8)
    if optimizer != "sgd":
        raise ValueError(f"unknown optimizer {optimizer!r}; expected sgd or adam")
    on_cuda = next(model.parameters()).is_cuda
    return torch.optim.SGD(
        param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov,
        foreach=None if on_cuda else True, fused=True if on_cuda else None,
    )


def lr_at(
    step: int, base_lr: float, total_steps: int, warmup: int = 0, num_cycles: float = 7 / 16,
    schedule: str = "cosine", lr_end: float = 0.0,
) -> float:
    """Learning rate at optimisation ``step`` (0-based): linear warmup, then ``lr·cos(7πk/16K)``.

    ``k`` counts steps after warmup and ``K`` the steps after warmup; the paper uses no warmup,
    so the rate decays from ``lr`` to ``lr·cos(7π/16) ≈ 0.195·lr``. ``schedule="linear"`` (the
    official ``ab_fixmatch_linearlr``) decays linearly instead: ``lr + (lr_end − lr)·k/K``.
    """
    if step < warmup:
        return base_lr * step / max(1, warmup)
    progress = (step - warmup) / max(1, total_steps - warmup)
    if schedule == "linear":
        return base_lr + (lr_end - base_lr) * min(1.0, progress)
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r}; expected cosine or linear")
    return base_lr * max(0.0, math.cos(math.pi * num_cycles * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply a learning rate to every group (the schedule lives in :func:`lr_at`, not here)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class TFAdam(torch.optim.Optimizer):
    """Adam as TF1's ``tf.train.AdamOptimizer`` (``ab_fixmatch_adam.py``), in foreach ops.

    Per step t (from 1): ``m ← β1·m + (1−β1)·g``, ``v ← β2·v + (1−β2)·g²``,
    ``θ ← θ − lr·√(1−β2^t)/(1−β1^t) · m/(√v + ε)``: ε is added to the *uncorrected* √v
    (torch.optim.Adam adds it to the bias-corrected one; the two agree only for β2 = 0).
    Weight decay is coupled, ``g ← g + wd·θ``: the gradient of the official ``wd·Σ‖w‖²/2`` loss
    term (not AdamW). The step count is a per-parameter Python int (no device sync).
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if not (lr > 0 and 0 <= betas[0] < 1 and 0 <= betas[1] < 1 and eps > 0 and weight_decay >= 0):
            raise ValueError(f"invalid Adam settings lr={lr} betas={betas} eps={eps} weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            (b1, b2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
            grads = [p.grad for p in params]
            if wd:
                grads = torch._foreach_add(grads, params, alpha=wd)
            for p in params:
                if not self.state[p]:
                    self.state[p].update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            states = [self.state[p] for p in params]
            m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
            for s in states:
                s["step"] += 1
            t = states[0]["step"]  # TF keeps one β^t for all variables: the group's parameters step together
            torch._foreach_mul_(m, b1)
            torch._foreach_add_(m, grads, alpha=1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_add_(denom, eps)
            lr_t = group["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            torch._foreach_addcdiv_(params, m, denom, value=-lr_t)
        return loss


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
