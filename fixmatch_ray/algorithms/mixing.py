"""The shared math of MixMatch, UDA and ReMixMatch as pure functions (google-research/fixmatch
``mixmatch.py``, ``uda.py``, ``remixmatch_no_cta.py``, ``libml/layers.py``).

No model, optimiser or I/O: tensors (and already-drawn random numbers) in, tensors out. Each
function names the official lines it follows.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

TSA_SCHEDULES = ("no", "linear", "exp", "log")  # uda.py:34 TSA_MODES


def sharpen(p: Tensor, T: float) -> Tensor:
    """``p^(1/T)`` renormalised over the last axis (``mixmatch.py:65-66``)."""
    q = p.pow(1.0 / T)
    return q / q.sum(dim=-1, keepdim=True)


def mix_weights(lam: Tensor) -> Tensor:
    """``λ' = max(λ, 1 − λ)``: each mixed sample stays closer to its own image (``layers.py:189``)."""
    return torch.maximum(lam, 1.0 - lam)


def mixup(x: Tensor, labels: Tensor, lam: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """MixUp of ``x`` (N, ...) and soft ``labels`` (N, C) with its permutation ``index`` (N,):
    ``λ'·x + (1 − λ')·x[index]`` with ``λ' = max(λ, 1 − λ)`` per sample (``layers.py:179-195``,
    ``MixMode.augment``). ``lam`` (N,) are the raw Beta(β, β) draws."""
    w = mix_weights(lam.to(x.dtype))
    wx = w.view(-1, *([1] * (x.dim() - 1)))
    wl = w.view(-1, 1).to(labels.dtype)
    return x * wx + x[index] * (1 - wx), labels * wl + labels[index] * (1 - wl)


def interleave_offsets(batch: int, nu: int) -> list[int]:
    """Where the ``nu + 1`` segments of a batch of ``batch`` rows start and end: equal groups, the
    remainder one row each on the last ones (``layers.py:92-100``)."""
    groups = [batch // (nu + 1)] * (nu + 1)
    for x in range(batch - sum(groups)):
        groups[-x - 1] += 1
    offsets = [0]
    for g in groups:
        offsets.append(offsets[-1] + g)
    return offsets


def interleave_index(parts: int, batch: int) -> Tensor:
    """The official ``layers.interleave`` of ``parts`` batches of ``batch`` rows as one permutation
    of their concatenation: batch ``i`` trades its segment ``i`` with batch 0's segment ``i``, so
    every batch fed to the network holds rows of each (``layers.py:103-109``). It is its own
    inverse: the same index undoes it (the official code calls ``interleave`` on the logits)."""
    offsets = interleave_offsets(batch, parts - 1)
    index = torch.arange(parts * batch)
    for i in range(1, parts):
        seg = torch.arange(offsets[i], offsets[i + 1])
        index[seg], index[i * batch + seg] = i * batch + seg, seg.clone()
    return index


def interleave(batches: list[Tensor]) -> list[Tensor]:
    """``layers.interleave(batches, batch)`` for equal-sized ``batches``: the same number of
    batches, rows exchanged as :func:`interleave_index` says (apply twice: the identity)."""
    n = len(batches[0])
    joined = torch.cat(batches)
    return list(joined[interleave_index(len(batches), n).to(joined.device)].split(n))


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over samples of ``−Σ_c targets·log softmax(logits)`` (``softmax_cross_entropy_with_logits``)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def l2_consistency(targets: Tensor, logits: Tensor) -> Tensor:
    """``mean((targets − softmax(logits))²)`` over samples *and* classes (``mixmatch.py:111-112``)."""
    return (targets - torch.softmax(logits.float(), dim=-1)).square().mean()


class MovingAverage:
    """``layers.PMovingAverage``: the mean of the last ``size`` batch means of a class
    distribution, renormalised; starts as ``size`` uniform rows (``layers.py:125-140``)."""

    def __init__(self, num_classes: int, size: int = 128, device: torch.device | None = None):
        self.buffer = torch.full((size, num_classes), 1.0 / num_classes, device=device)

    def __call__(self) -> Tensor:
        v = self.buffer.mean(dim=0)
        return v / v.sum()

    def update(self, batch_mean: Tensor) -> None:
        """Drop the oldest row, append ``batch_mean`` (already the mean over the batch)."""
        self.buffer = torch.cat([self.buffer[1:], batch_mean.detach().float().view(1, -1)])


def align(p_model_y: Tensor, p_data: Tensor, p_model: Tensor) -> Tensor:
    """Distribution alignment: ``p · (1e-6 + p_data) / (1e-6 + p_model)`` renormalised per row
    (``remixmatch_no_cta.py:52-54``)."""
    weighted = p_model_y * ((1e-6 + p_data) / (1e-6 + p_model))
    return weighted / weighted.sum(dim=-1, keepdim=True)


def rotate_quarters(x: Tensor) -> tuple[Tensor, Tensor]:
    """The official rotation task of ReMixMatch: of an (N, C, H, W) batch, with ``b4 = N // 4``, rows
    ``[0, b4)`` stay (label 0), ``[b4, 2b4)`` turn 180° (label 1), then ``[2b4, 3b4)`` by 90°
    counter-clockwise (label 2) and the rest by 90° clockwise (label 3): ``random_rotate`` of
    ``remixmatch_no_cta.py:82-87`` in NCHW (its ``transpose`` then row / column reversal). Rows
    past ``4·b4`` are rotated clockwise and carry label 3, as there."""
    b4 = len(x) // 4
    first, second = x[:b4], x[b4:2 * b4]
    xt = x[2 * b4:].transpose(2, 3)
    out = torch.cat([first, second.flip(2, 3), xt[:b4].flip(2), xt[b4:].flip(3)])
    labels = torch.cat([torch.full((b4,), r, dtype=torch.long) for r in range(3)]
                       + [torch.full((len(x) - 3 * b4,), 3, dtype=torch.long)])
    return out, labels.to(x.device)


def tsa_threshold(schedule: str, progress: float, num_classes: int, scale: float = 5.0) -> float:
    """UDA's training-signal-annealing threshold at ``progress`` (the official ``step_ratio``):
    ``coeff·(1 − 1/C) + 1/C`` with coeff ``progress`` (linear), ``exp((progress − 1)·scale)``
    (exp) or ``1 − exp(−progress·scale)`` (log), capped at 1; ``no``: 1 (``uda.py:36-52``)."""
    if schedule == "linear":
        coeff = progress
    elif schedule == "exp":
        coeff = math.exp((progress - 1) * scale)
    elif schedule == "log":
        coeff = 1 - math.exp(-progress * scale)
    elif schedule == "no":
        coeff = 1.0
    else:
        raise ValueError(f"unknown TSA schedule {schedule!r}; expected one of {', '.join(TSA_SCHEDULES)}")
    p_min = 1.0 / num_classes
    return min(coeff, 1.0) * (1 - p_min) + p_min


def tsa_cross_entropy(logits: Tensor, labels: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Labeled cross-entropy without the samples whose true-class probability is above
    ``threshold``: ``Σ mask·CE / max(Σ mask, 1)``, and the mask (``uda.py:54-59, 169-171``)."""
    logits = logits.float()
    p_correct = torch.softmax(logits, dim=-1).gather(1, labels.view(-1, 1)).squeeze(1)
    mask = p_correct.le(threshold).float().detach()
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (ce * mask).sum() / mask.sum().clamp(min=1.0), mask


def kl_from_logits(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """Per-sample ``KL(softmax(p) ‖ softmax(q))`` (``uda.py:76-81``)."""
    p_logits, q_logits = p_logits.float(), q_logits.float()
    log_p = F.log_softmax(p_logits, dim=-1)
    return (log_p.exp() * (log_p - F.log_softmax(q_logits, dim=-1))).sum(dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Per-sample entropy of ``softmax(logits)`` (``uda.py:84-88``)."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)
