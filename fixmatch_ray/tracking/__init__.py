"""Experiment trackers behind one interface (:class:`.base.Tracker`).

TensorBoard is built in; MLflow and W&B come as optional extras. Add a tracker: a module here
with a :class:`Tracker` subclass, and its line in ``TRACKERS``.
"""
from __future__ import annotations

from .base import TAGS, Tracker, record_scalars

__all__ = ["TAGS", "TRACKERS", "Tracker", "record_scalars"]


def _tensorboard(**kwargs) -> Tracker:
    from .tensorboard import TensorBoardTracker  # imports torch's SummaryWriter only when used

    return TensorBoardTracker(**kwargs)


TRACKERS = {"tensorboard": _tensorboard}
