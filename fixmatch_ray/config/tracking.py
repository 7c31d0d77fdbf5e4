"""Where runs are tracked besides TensorBoard: the ``tracking:`` block of a sweep file, and what
``train --tracking`` builds from its flags.

    tracking:
      mlflow: {tracking_uri: "sqlite:///mlflow.db", experiment: fixmatch-quick}
      wandb: {project: fixmatch, mode: offline}

Each key is the name of a tracker in :data:`fixmatch_ray.tracking.TRACKERS` (a built-in or an
installed plugin), its value that tracker's options, read strictly by its own ``Options``
dataclass. Every run (a single run, a ``--ddp-workers`` run, each sweep trial) logs to them from
its rank 0: its config once, every evaluation at its training step, and the final summary.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError
from .strict import check_types, from_mapping, require


@dataclass(frozen=True)
class TrackingSpec:
    """``tracking``: tracker name → its options (each key present turns its tracker on)."""

    trackers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self, "tracking")

    @classmethod
    def parse(cls, doc: Any, where: str = "tracking") -> "TrackingSpec":
        """The block ``doc`` (``{name: {options}}``; None or {} for none), every tracker's options
        checked by its own ``Options``; any problem is one :class:`ConfigError` line."""
        from ..tracking import TRACKERS

        doc = {} if doc is None else doc
        require(isinstance(doc, Mapping), f"{where}: expected a mapping of tracker names to their options, "
                f"got {type(doc).__name__}")
        trackers = {}
        for name, block in doc.items():
            require(name in TRACKERS, f"{where}: unknown tracker {name!r}; expected one of {', '.join(TRACKERS)}")
            try:
                trackers[name] = from_mapping(TRACKERS[name].Options, {} if block is None else block, f"{where}: {name}")
            except ConfigError as e:  # a value's own message names its key: say whose
                msg = str(e)
                raise ConfigError(msg if msg.startswith(where) else f"tracking.{name}.{msg}") from None
        return cls(trackers)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(options) for name, options in self.trackers.items()}

    @property
    def enabled(self) -> list[str]:
        return list(self.trackers)
