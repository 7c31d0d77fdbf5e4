"""By-hand math and a recording identity network for the algorithm unit tests (logits = images)."""
from __future__ import annotations

import math

import pytest
import torch


class RecordingForward:
    """The identity network: logits = images; records each call's ``update_bn``."""

    def __init__(self):
        self.calls: list[tuple[int, bool]] = []

    def __call__(self, x: torch.Tensor, *, update_bn: bool = True) -> torch.Tensor:
        self.calls.append((len(x), update_bn))
        return x.float() * 1.0  # a new tensor, with x's gradient path


def softmax(row: list[float]) -> list[float]:
    """By hand: exp / sum exp."""
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def cross_entropy(row: list[float], label: int) -> float:
    return -math.log(softmax(row)[label])


@pytest.fixture
def forward() -> RecordingForward:
    """A fresh recording identity network (import it into a test module to use it)."""
    return RecordingForward()
