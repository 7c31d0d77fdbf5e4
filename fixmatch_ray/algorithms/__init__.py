"""SSL algorithms behind one contract (:mod:`.base`); importing this package registers the built-in
ones, and other packages add theirs through the ``fixmatch_ray.algorithms`` entry-point group.

Add one here: write ``algorithms/<name>.py`` with an :class:`Algorithm` subclass decorated by
:func:`register`, and import it below.
"""
from .base import (ALGORITHMS, LOCAL, Algorithm, Collective, Context, Forward, StepInput, TorchCollective, Views,
                   build_algorithm, metric_key, register)
from .fixmatch import FixMatch
from .flexmatch import FlexMatch
from .fullysupervised import FullySupervised
from .meanteacher import MeanTeacher
from .mixmatch import MixMatch
from .pimodel import PiModel
from .pseudolabel import PseudoLabel
from .remixmatch import ReMixMatch
from .uda import UDA

__all__ = ["ALGORITHMS", "LOCAL", "Algorithm", "Collective", "Context", "FixMatch", "FlexMatch", "Forward",
           "FullySupervised", "MeanTeacher", "MixMatch", "PiModel", "PseudoLabel", "ReMixMatch", "StepInput",
           "TorchCollective", "UDA", "Views", "build_algorithm", "metric_key", "register"]
