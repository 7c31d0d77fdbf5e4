"""Weights & Biases: one W&B run per training run (optional extra: ``pip install -e '.[wandb]'``).

The run's config goes to ``run.config``, every evaluation's scalars (the TensorBoard tags) to the
history at its training step (W&B's ``step``), the summary (``median20_acc``, ``best_acc``,
``last_acc``, ``evals``) to ``run.summary``. ``mode: offline`` writes the run under ``dir``
(``wandb/offline-run-*``) for a later ``wandb sync``. A run's W&B id comes from its directory, so a
resumed run continues its W&B run (online; offline resumes are merged by ``wandb sync``).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

from ..config.tracking import WandbSpec
from ..errors import ConfigError
from .base import Tracker, metrics_of, summary_of


def require_wandb():
    """The ``wandb`` module, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("tracking.wandb: the wandb package is not installed; "
                          "pip install -e '.[wandb]' (or pip install wandb)") from None
    return wandb


def check(spec: WandbSpec) -> None:
    """Before Ray starts: the package is there, and online mode has an API key."""
    wandb = require_wandb()
    if spec.mode != "online" or os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return
    try:
        key = wandb.Api(timeout=5).api_key  # the key `wandb login` stored (netrc / settings), if any
    except Exception:  # no key configured: wandb raises rather than returning None in some versions
        key = None
    if not key:
        raise ConfigError("tracking.wandb: mode online needs a W&B API key (run `wandb login` or set "
                          "WANDB_API_KEY); or use mode: offline and `wandb sync` later")


def run_id(key: str) -> str:
    """A W&B run id that is a pure function of the run's directory (resumes find it again)."""
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def settings(wandb):
    """W&B without its console banner and stdout capture: the sweep's output stays ours."""
    return wandb.Settings(silent=True, console="off")


class WandbTracker(Tracker):
    """One run's W&B run, started when the run starts."""

    def __init__(self, project: str, mode: str = "online", entity: str | None = None, group: str | None = None,
                 tags: list[str] | tuple[str, ...] = (), dir: str | None = None, *, run_key: str,
                 run_name: str | None = None):
        self.init_args = {"project": project, "mode": mode, "entity": entity, "group": group, "tags": list(tags),
                          "dir": dir, "name": run_name, "id": run_id(run_key)}
        self.run = None

    def log_config(self, config: Mapping[str, Any]) -> None:
        wandb = require_wandb()
        if self.init_args["dir"]:
            os.makedirs(self.init_args["dir"], exist_ok=True)
        self.run = wandb.init(**self.init_args, config=dict(config), resume="allow", reinit="create_new",
                              settings=settings(wandb))

    def log_metrics(self, record: Mapping[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics_of(record), step=int(step))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(summary_of(summary))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
