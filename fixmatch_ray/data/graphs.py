"""A step's device augmentation replayed as one captured CUDA graph.

On the device path a step's augmentation is a fixed sequence of ~300 (RandAugment) to ~1,800
(CTAugment, with its probes) small kernels: static shapes, no host sync (``tests/test_fake_cuda.py``
keeps it so). Launched one by one from Python that is ~2-11 ms of CPU time a step, more than the GPU
needs for a WRN-28-2 step. Captured once as a CUDA graph, a step is one replay.

The same kernels run, so the same values come out, and the random stream stays the eager one: the
augmentation's generator is registered with the graph (``CUDAGraph.register_generator_state``), so
a replay reads the generator's seed and offset at replay time; re-seeding it from ``(seed, step)``
before each replay draws exactly what eager code seeded the same way draws. What a replay reads
must stay where the capture saw it: the step's indices are copied into the graph's own input
tensors, a learning policy's state is updated in place (CTAugment's rates), and the outputs, which
the next replay overwrites, are handed out as copies. Eager steps come first (the per-device tables
are built and uploaded then); a capture that fails is one warning line, and the steps stay eager.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_map

WARMUP_STEPS = 2  # eager steps before the capture


def cuda_capture(fn: Callable[..., Any], gen: torch.Generator, *inputs: torch.Tensor) -> tuple[Callable[[], None], Any]:
    """Capture ``fn(*inputs)`` on its CUDA device: (replay, the graph's outputs)."""
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(gen)
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads (uploads) go on
        out = fn(*inputs)
    return graph.replay, out


def _copy(t: Any) -> Any:
    return t.clone() if isinstance(t, torch.Tensor) else t


class StepGraph:
    """``fn(*inputs)`` drawing from ``gen``, seeded per call: eager for :data:`WARMUP_STEPS` calls,
    then captured once (``capture``: :func:`cuda_capture`) and replayed."""

    def __init__(self, fn: Callable[..., Any], gen: torch.Generator,
                 capture: Callable[..., tuple[Callable[[], None], Any]] = cuda_capture):
        self.fn, self.gen, self.capture = fn, gen, capture
        self.calls = 0
        self.replay: Callable[[], None] | None = None
        self.inputs: tuple[torch.Tensor, ...] = ()
        self.outputs: Any = None
        self.failed: str | None = None

    @property
    def captured(self) -> bool:
        return self.replay is not None

    def __call__(self, seed: int, *inputs: torch.Tensor) -> Any:
        self.calls += 1
        if self.replay is None and (self.failed or self.calls <= WARMUP_STEPS or not self._capture(inputs)):
            self.gen.manual_seed(seed)
            return self.fn(*inputs)
        for static, given in zip(self.inputs, inputs):
            static.copy_(given)
        self.gen.manual_seed(seed)  # the replay reads the generator's seed and offset now
        self.replay()
        return tree_map(_copy, self.outputs)

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> bool:
        self.inputs = tuple(t.clone() for t in inputs)
        try:
            self.replay, self.outputs = self.capture(self.fn, self.gen, *self.inputs)
        except Exception as e:  # an op that cannot be captured: stay eager, say so once
            self.failed = f"{type(e).__name__}: {e}".splitlines()[0]
            print(f"warning: the augmentation runs eagerly (its CUDA graph capture failed: {self.failed})",
                  file=sys.stderr, flush=True)
            return False
        return True
