"""TensorBoard scalars, written by rank 0 only: the one place the rank is looked at."""
from __future__ import annotations

import os
from typing import Mapping


class Tracker:
    """Step-indexed TensorBoard scalars in ``logdir``; a no-op on ranks other than 0.

    Curves are indexed by the global optimisation step, so a resumed run continues them where
    they stopped instead of starting again at 0 (a new event file is added beside the old).
    ``logdir`` may be a URI (``s3://``, ``gs://``): events are then written to a local
    directory and copied there after every flush.
    """

    def __init__(self, logdir: str | os.PathLike | None, rank: int = 0):
        self.writer = None
        self.remote: str | None = None
        if logdir is None or rank != 0:
            return
        from torch.utils.tensorboard import SummaryWriter

        logdir = os.fspath(logdir)
        if "://" in logdir:
            import tempfile

            self.remote, logdir = logdir, tempfile.mkdtemp(prefix="fixmatch_tb_")
        self.writer = SummaryWriter(log_dir=logdir)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
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


# Which record keys become which TensorBoard tags.
TB_TAGS = {
    "train/loss": "train_loss",
    "train/loss_x": "train_loss_x",
    "train/loss_u": "train_loss_u",
    "train/mask": "mask_rate",
    "train/lr": "lr",
    "train/images_per_s": "images_per_s",
    "test/acc": "test_acc",
    "test/loss": "test_loss",
    "test/raw_acc": "raw_test_acc",
    "test/median20_acc": "median20_acc",
}


def record_scalars(record: Mapping[str, float]) -> dict[str, float]:
    """The TensorBoard scalars of one eval-epoch record (keys absent from it are skipped)."""
    return {tag: record[key] for tag, key in TB_TAGS.items() if key in record}
