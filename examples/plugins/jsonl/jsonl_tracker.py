"""A tracker as a fixmatch_ray tracker plugin: every run appends its config, each evaluation and its
summary as JSON lines to ``<dir>/<run name>.jsonl``."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from fixmatch_ray.config.cli import opt
from fixmatch_ray.config.strict import Options, require
from fixmatch_ray.errors import ConfigError
from fixmatch_ray.tracking.base import Tracker, metrics_of, summary_of


@dataclass(frozen=True)
class JsonlOptions(Options):
    dir: str | None = opt(None, "with --tracking jsonl: where the <run>.jsonl files go (default: the run's "
                          "directory; a sweep's: the experiment's)")

    def check(self) -> None:
        require(self.dir is None or "://" not in self.dir, f"dir: {self.dir!r} must be a local directory")


class JsonlTracker(Tracker):
    name = "jsonl"
    Options = JsonlOptions

    def __init__(self, options, run):
        super().__init__(options, run)
        where = options.dir or run.local_dir
        if where is None:
            raise ConfigError("tracking.jsonl: the run has no local directory; set tracking.jsonl.dir")
        self.path = os.path.join(where, f"{run.name}.jsonl")

    def _write(self, doc: dict) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(doc) + "\n")

    def log_config(self, config):
        self._write({"config": dict(config)})

    def log_metrics(self, record, step):
        self._write({"step": step, "metrics": metrics_of(record)})

    def log_summary(self, summary):
        self._write({"summary": summary_of(summary)})
