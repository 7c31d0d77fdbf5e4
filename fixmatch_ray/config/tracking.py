"""Where runs are tracked besides TensorBoard: the ``tracking:`` block of a sweep file, and what
``train --tracking`` builds from its flags (no Ray, no tracker packages here).

    tracking:
      mlflow: {tracking_uri: "sqlite:///mlflow.db", experiment: fixmatch-quick}
      wandb: {project: fixmatch, mode: offline}

A sweep logs through Ray Tune's own ``MLflowLoggerCallback`` / ``WandbLoggerCallback`` (one run
per trial); a single run through :mod:`fixmatch_ray.tracking`'s trackers. Either way a run gets
its config once, every evaluation at its training step, and the final summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..storage import is_uri
from .strict import check_types, require

WANDB_MODES = ("offline", "online")


@dataclass(frozen=True)
class MLflowSpec:
    """``tracking.mlflow``."""

    # None: MLflow's own default ($MLFLOW_TRACKING_URI, else its local store); a server
    # (http://...), a database (sqlite:///path/mlflow.db) or a directory (file:///path/mlruns).
    tracking_uri: str | None = None
    experiment: str | None = None  # the MLflow experiment (sweeps: default the sweep's name)
    tags: dict[str, str] = field(default_factory=dict)  # set on every run

    def __post_init__(self) -> None:
        check_types(self, "tracking.mlflow")
        require(self.tracking_uri is None or self.tracking_uri.strip() != "",
                "tracking.mlflow.tracking_uri: is empty; leave it out for MLflow's default")
        require(self.experiment is None or self.experiment.strip() != "",
                "tracking.mlflow.experiment: is empty; leave it out to use the sweep's name")


@dataclass(frozen=True)
class WandbSpec:
    """``tracking.wandb``: the ``wandb.init`` arguments a run gets."""

    project: str | None = None  # required
    mode: str = "online"  # offline: runs are written locally, `wandb sync <dir>` uploads them later
    entity: str | None = None  # team or user (default: the API key's)
    group: str | None = None  # sweeps: default the sweep's name
    tags: list[str] = field(default_factory=list)
    dir: str | None = None  # local directory for W&B's files (default: the experiment / run directory)

    def __post_init__(self) -> None:
        check_types(self, "tracking.wandb")
        require(bool(self.project and self.project.strip()),
                "tracking.wandb.project: required: the W&B project the runs go to")
        require(self.mode in WANDB_MODES,
                f"tracking.wandb.mode: expected one of {', '.join(WANDB_MODES)}, got {self.mode!r}")
        require(self.dir is None or not is_uri(self.dir),
                f"tracking.wandb.dir: {self.dir!r} must be a local directory (W&B writes its files there)")


@dataclass(frozen=True)
class TrackingSpec:
    """``tracking``: each key present turns its tracker on."""

    mlflow: MLflowSpec | None = None
    wandb: WandbSpec | None = None

    def __post_init__(self) -> None:
        check_types(self, "tracking")

    @property
    def enabled(self) -> list[str]:
        return [name for name in ("mlflow", "wandb") if getattr(self, name) is not None]
