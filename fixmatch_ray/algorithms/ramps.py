"""Warm-ups of a loss weight: pure functions of the step (host floats, no tensor, no sync).

The official baselines ramp their unlabeled-loss weight linearly from 0 to 1 and hold it there:
``clip(step / (warmup_pos · train_kimg << 10), 0, 1)`` with the step counted in images
(``pi_model.py:44``, ``pseudo_label.py:43``, ``mean_teacher.py:45``). Counted in optimisation
steps of a fixed batch that is ``clip(k / (warmup_pos · K), 0, 1)``: :func:`relative_warmup`.
A warm-up over a fixed length (``warmup_kimg``) is :func:`linear_warmup` of the images seen.
"""
from __future__ import annotations


def linear_warmup(done: float, length: float) -> float:
    """``clip(done / length, 0, 1)``; a length of 0 (or less) is no warm-up: 1 from the start."""
    if length <= 0:
        return 1.0
    return min(max(done / length, 0.0), 1.0)


def relative_warmup(step: int, total_steps: int, warmup_pos: float) -> float:
    """The weight at optimisation ``step`` (0-based) of a run of ``total_steps``, reaching 1 at
    ``warmup_pos`` of training (0.4 in the official baselines)."""
    return linear_warmup(step, warmup_pos * total_steps)
