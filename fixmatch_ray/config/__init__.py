"""One source of truth for configuration: run configs, resources and sweep files, all read by
the same strict loader (:mod:`.strict`); the ``train`` CLI's flags come from the run config's
fields (:mod:`.cli`)."""
from ..errors import ConfigError
from .resources import Resources
from .run import AMP_MODES, RunConfig
from .strict import load_yaml
from .sweep import SweepSpec, TrialSpec, load_sweep, parse_sweep

__all__ = ["AMP_MODES", "ConfigError", "Resources", "RunConfig", "SweepSpec", "TrialSpec", "load_sweep",
           "load_yaml", "parse_sweep"]
