"""Fixtures of the algorithm unit tests."""
import pytest

from handmath import RecordingForward


@pytest.fixture
def forward() -> RecordingForward:
    return RecordingForward()
