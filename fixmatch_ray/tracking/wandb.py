"""Weights & Biases: one W&B run per training run (optional extra: ``pip install -e '.[wandb]'``).

The run's config goes to ``run.config``, every evaluation's numbers (under their record names) to
the history at its training step (W&B's ``step``), the summary (``median20_acc``, ``best_acc``,
``last_acc``, ``evals``) to ``run.summary``. ``mode: offline`` writes the run under ``dir``
(``wandb/offline-run-*``) for a later ``wandb sync``. A run's W&B id comes from its directory, so a
resumed run or a retried sweep trial continues its W&B run (online; offline resumes are merged by
``wandb sync``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config.cli import opt
from ..config.strict import Options, require
from ..errors import ConfigError
from ..storage import is_uri, local_path
from .base import TrackedRun, Tracker, metrics_of, summary_of

WANDB_MODES = ("offline", "online")


@dataclass(frozen=True)
class WandbOptions(Options):
    """``tracking.wandb``: the ``wandb.init`` arguments a run gets."""

    project: str | None = opt(None, "with --tracking wandb: the W&B project (required)")
    # offline: runs are written locally, `wandb sync <dir>` uploads them later
    mode: str = opt("online", "with --tracking wandb: online (default) or offline", choices=WANDB_MODES)
    entity: str | None = None  # team or user (default: the API key's)
    group: str | None = None  # sweeps: default the sweep's name
    tags: list[str] = field(default_factory=list)
    dir: str | None = None  # local directory for W&B's files (default: the experiment / run directory)

    def check(self) -> None:
        require(bool(self.project and self.project.strip()), "project: required: the W&B project the runs go to")
        require(self.mode in WANDB_MODES, f"mode: expected one of {', '.join(WANDB_MODES)}, got {self.mode!r}")
        require(self.dir is None or not is_uri(self.dir),
                f"dir: {self.dir!r} must be a local directory (W&B writes its files there)")


def require_wandb():
    """The ``wandb`` module, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("tracking.wandb: the wandb package is not installed; "
                          "pip install -e '.[wandb]' (or pip install wandb)") from None
    return wandb


def run_id(key: str) -> str:
    """A W&B run id that is a pure function of the run's directory (resumes find it again)."""
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def settings(wandb):
    """W&B without its console banner and stdout capture: the sweep's output stays ours."""
    return wandb.Settings(silent=True, console="off")


class WandbTracker(Tracker):
    """One run's W&B run, started when the run starts."""

    name = "wandb"
    Options = WandbOptions

    @classmethod
    def check(cls, options: WandbOptions) -> None:
        """The package is there, and online mode has an API key."""
        wandb = require_wandb()
        if options.mode != "online" or os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
            return
        try:
            key = wandb.Api(timeout=5).api_key  # the key `wandb login` stored (netrc / settings), if any
        except Exception:  # no key configured: wandb raises rather than returning None in some versions
            key = None
        if not key:
            raise ConfigError("tracking.wandb: mode online needs a W&B API key (run `wandb login` or set "
                              "WANDB_API_KEY); or use mode: offline and `wandb sync` later")

    def __init__(self, options: WandbOptions, run: TrackedRun):
        super().__init__(options, run)
        o, where = options, options.dir or run.local_dir
        self.init_args = {"project": o.project, "mode": o.mode, "entity": o.entity, "group": o.group or run.group,
                          "tags": list(o.tags), "dir": os.path.abspath(local_path(where)) if where else None, "name": run.name,
                          "id": run_id(run.key)}
        self.wandb_run = None

    def log_config(self, config: Mapping[str, Any]) -> None:
        wandb = require_wandb()
        if self.init_args["dir"]:
            os.makedirs(self.init_args["dir"], exist_ok=True)
        self.wandb_run = wandb.init(**self.init_args, config=dict(config), resume="allow", reinit="create_new",
                                    settings=settings(wandb))

    def log_metrics(self, record: Mapping[str, Any], step: int) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log(metrics_of(record), step=int(step))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.summary.update(summary_of(summary))

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
