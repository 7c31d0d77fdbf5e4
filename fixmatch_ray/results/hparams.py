"""TensorBoard HParams of a sweep's trials: one run per trial under ``<experiment>/hparams/``."""
from __future__ import annotations

import tempfile
from typing import Any

from ..storage import Store
from ..storage.layout import HPARAMS_DIR
from .aggregate import algorithm_options
from .read import TrialResult


# the run-config keys shown (a key whose value is None, e.g. beta1 under SGD, is left out), then
# the trial's algorithm and every option of it
HPARAM_KEYS = ("dataset", "num_labeled", "arch", "depth", "width", "batch_size", "mu", "lr", "wdecay",
               "ema_decay", "total_steps", "seed",
               # the ablations' axes
               "policy", "strong_aug", "optimizer", "momentum", "nesterov", "beta1", "beta2", "lr_schedule",
               "lr_end", "split_seed")


def write_hparams(store: Store, trials: list[TrialResult]) -> None:
    """One TensorBoard HParams run per trial under ``<experiment>/hparams/<trial>``."""
    from torch.utils.tensorboard import SummaryWriter

    with tempfile.TemporaryDirectory() as tmp:
        for t in trials:
            hp: dict[str, Any] = {k: t.run.get(k) for k in HPARAM_KEYS if t.run.get(k) is not None}
            hp.update({k: v for k, v in algorithm_options(t).items() if v is not None})
            hp["setting"] = t.label
            metrics = {f"hparam/{k}": float(t.final[k]) for k in ("median20_acc", "best_acc", "last_acc")
                       if k in t.final}
            metrics["hparam/finished"] = float(t.status == "finished")
            with SummaryWriter(log_dir=f"{tmp}/{t.name}") as w:
                w.add_hparams(hp, metrics, run_name=".")
        store.upload_dir(tmp, HPARAMS_DIR)

