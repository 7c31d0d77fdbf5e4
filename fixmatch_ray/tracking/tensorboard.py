"""TensorBoard scalars of one run (rank 0 only: the run loop gives other ranks no tracker)."""
from __future__ import annotations

import os
from typing import Any, Mapping

from ..storage import is_uri, local_path
from .base import Tracker, record_scalars


class TensorBoardTracker(Tracker):
    """Step-indexed TensorBoard scalars in ``logdir``, one tag per record name (``test_acc``,
    ``train_loss``...); every run has it (it is not one of the configurable ``TRACKERS``).

    Curves are indexed by the global optimisation step, so a resumed run continues them where
    they stopped instead of starting again at 0 (a new event file is added beside the old).
    ``logdir`` may be a URI (``s3://``, ``gs://``): events are then written to a local
    directory and copied there after every flush.
    """

    name = "tensorboard"

    def __init__(self, logdir: str | os.PathLike):
        self.writer = None
        self.remote: str | None = None
        from torch.utils.tensorboard import SummaryWriter

        logdir = os.fspath(logdir)
        if is_uri(logdir):
            import tempfile

            self.remote, logdir = logdir, tempfile.mkdtemp(prefix="fixmatch_tb_")
        self.writer = SummaryWriter(log_dir=local_path(logdir))

    def log_metrics(self, record: Mapping[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in record_scalars(record).items():
            if value is not None:
                self.writer.add_scalar(tag, float(value), global_step=step)
        self.writer.flush()
        if self.remote is not None:
            import pyarrow.fs

            pyarrow.fs.copy_files(self.writer.log_dir, self.remote)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
