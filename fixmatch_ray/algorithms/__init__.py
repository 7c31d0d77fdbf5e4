"""SSL algorithms behind one interface; importing this package registers the built-in ones.

Add an algorithm: write ``algorithms/<name>.py`` with an :class:`Algorithm` subclass decorated
by :func:`register`, and import it below.
"""
from .base import (LOCAL, REGISTRY, Algorithm, Collective, StepInput, TorchCollective,
                   build_algorithm, register)
from .fixmatch import FixMatch
from .flexmatch import FlexMatch

__all__ = ["LOCAL", "REGISTRY", "Algorithm", "Collective", "FixMatch", "FlexMatch", "StepInput",
           "TorchCollective", "build_algorithm", "register"]
