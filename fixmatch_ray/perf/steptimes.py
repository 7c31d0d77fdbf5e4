"""ms per training step of a run: measured (``--step-times FILE``, what ``bench gpu`` writes) or
else estimated (:mod:`.estimate`), the one source of the sweep plan's and ``bench gpu``'s GPU-hours.

The step-time file::

    {"card": "NVIDIA H100 80GB HBM3",        # the GPU measured (printed; names the card's figures)
     "card_memory_gib": 79.1,                # optional: its memory (the plan refuses trials that do not fit)
     "images_per_step": 960,                 # optional: B*(1+2*mu) the times were measured at (960)
     "step_ms": {"randaugment": {"wideresnet-28-2": {"off": 14.1, "bf16": 8.2, "bf16+compile": 6.9}},
                 "ctaugment": {"wideresnet-28-2": {"off": 15.0}}},
     "notes": ["wideresnet-28-8 bf16+compile: failed (...)"]}   # optional: what bench gpu could not measure

``step_ms`` is keyed by policy, then model, then precision. A file whose ``step_ms`` is keyed by model
(the earlier format) holds RandAugment's times. Model keys are ``arch-depth-width``, plus
``-s<scales>`` for a wideresnet that is not 3-stage and ``-c<cardinality>`` for resnext. Precision
keys: ``off`` (fp32, TF32 convolutions and matmuls: ``amp: off``), ``ieee`` (``amp: off`` with
``tf32: false``), ``bf16``, ``fp16``, each optionally ``+compile``. ``amp: auto`` is bf16 on a card
with native bf16, else fp16. What the file lacks is estimated for its card.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..errors import ConfigError
from .cards import CARDS, DEFAULT_CARD, Card, find_card

if TYPE_CHECKING:
    from ..config.run import RunConfig

REFERENCE_IMAGES = 64 * (1 + 2 * 7)  # B=64, mu=7: 64 labeled + 448 weak + 448 strong per step
PRECISIONS = ("off", "ieee", "bf16", "fp16")
POLICIES = ("randaugment", "ctaugment")
ESTIMATE = "estimate"
PRECISION_LABEL = {"off": "fp32 (TF32)", "ieee": "IEEE fp32", "bf16": "bf16", "fp16": "fp16 + GradScaler"}


@dataclass(frozen=True)
class StepTimes:
    """A step-time table: ms per step by policy, model key and precision key, and the card."""

    step_ms: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)
    card: str = DEFAULT_CARD
    images_per_step: int = REFERENCE_IMAGES
    measured: bool = False
    card_memory_gib: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        return f"measured on {self.card}" if self.measured else ESTIMATE


DEFAULTS = StepTimes()


def load_step_times(path: str | os.PathLike) -> StepTimes:
    """Read a ``--step-times`` file (format above); any problem is one :class:`ConfigError` line."""
    where = f"--step-times {os.fspath(path)}"
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{where}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise ConfigError(f"{where}: not JSON ({e}); expected {{\"card\": ..., \"step_ms\": {{policy: {{model: "
                          "{{amp: ms}}}}}}}}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("step_ms"), dict) or not doc["step_ms"]:
        raise ConfigError(f"{where}: expected an object with a non-empty \"step_ms\": {{policy: {{model: {{amp: ms}}}}}}, "
                          "e.g. {\"card\": \"H100\", \"step_ms\": {\"randaugment\": {\"wideresnet-28-2\": {\"off\": 14.0}}}}")
    unknown = set(doc) - {"card", "card_memory_gib", "images_per_step", "step_ms", "notes"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected card, card_memory_gib, "
                          "images_per_step, step_ms, notes")
    by_policy = doc["step_ms"]
    if not set(by_policy) & set(POLICIES):  # the earlier format: models at the top, RandAugment's times
        _check_models(where, "step_ms", by_policy)
        by_policy = {"randaugment": by_policy}
    for policy, models in by_policy.items():
        if policy not in POLICIES:
            raise ConfigError(f"{where}: step_ms.{policy}: unknown policy; expected {' or '.join(POLICIES)} "
                              "(or models at the top: RandAugment's times)")
        _check_models(where, f"step_ms.{policy}", models)
    images = doc.get("images_per_step", REFERENCE_IMAGES)
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"{where}: images_per_step: expected a positive integer, got {images!r}")
    memory = doc.get("card_memory_gib")
    if memory is not None and not _positive(memory):
        raise ConfigError(f"{where}: card_memory_gib: expected GiB > 0, got {memory!r}")
    notes = doc.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ConfigError(f"{where}: notes: expected a list of strings, got {notes!r}")
    return StepTimes(by_policy, str(doc.get("card", "an unnamed card")), images, True, memory, tuple(notes))


def _positive(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and x > 0 and math.isfinite(x)


def _check_models(where: str, at: str, models) -> None:
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"{where}: {at}: expected {{model: {{amp: ms}}}}, got {models!r}")
    for model, times in models.items():
        if not isinstance(times, dict) or not times:
            raise ConfigError(f"{where}: {at}.{model}: expected {{amp: ms}}, e.g. {{\"off\": 14.0, \"bf16\": 8.0}}, "
                              f"got {times!r}")
        for amp, ms in times.items():
            if amp.removesuffix("+compile") not in PRECISIONS:
                raise ConfigError(f"{where}: {at}.{model}.{amp}: unknown precision; expected one of "
                                  f"{', '.join(PRECISIONS)}, optionally with +compile")
            if not _positive(ms):
                raise ConfigError(f"{where}: {at}.{model}.{amp}: expected milliseconds > 0, got {ms!r}")


def model_key(run: "RunConfig") -> str:
    """The step-time table's key of a (resolved) run's network, e.g. ``wideresnet-28-2``."""
    key = f"{run.arch}-{run.depth}-{run.width}"
    if run.arch == "wideresnet" and run.scales not in (None, 3):
        key += f"-s{run.scales}"
    if run.arch == "resnext":
        key += f"-c{run.cardinality}"
    return key


def precision_key(run: "RunConfig", card: Card) -> str:
    """The step-time table's precision of a run on ``card`` (``+compile`` not included)."""
    if run.amp == "off":
        return "off" if getattr(run, "tf32", True) else "ieee"
    if run.amp == "auto":
        return "bf16" if card.bf16 else "fp16"
    return run.amp


def table_card(table: StepTimes, fallback: Card | None = None) -> Card:
    """The card a table's figures are for: the one measured, else ``fallback``, else an H100."""
    return find_card(table.card) if table.measured and find_card(table.card) else (fallback or CARDS[DEFAULT_CARD])


@dataclass(frozen=True)
class StepTime:
    ms: float  # one step, one rank (a DDP trial's ranks run in parallel)
    source: str  # "measured on <card>" or "estimate"
    precision: str  # the key looked up, e.g. "bf16+compile"


def step_time(run: "RunConfig", table: StepTimes, workers: int = 1, card: Card | None = None) -> StepTime | None:
    """ms per step of ``run`` on ``workers`` whole GPUs of ``card`` (default: the table's): measured
    where the table has it (scaled linearly from the table's images per step, and to G ranks by the
    DDP model of :mod:`.estimate`), else estimated; None when the model has no counts."""
    from .estimate import ddp_speedup, known, step_estimate

    card = card or table_card(table)
    images, policy, key = run.batch_size * (1 + 2 * run.mu), run.policy, model_key(run)
    base = precision_key(run, card)
    for prec in ([f"{base}+compile"] if run.compile else []) + [base]:
        ms = table.step_ms.get(policy, {}).get(key, {}).get(prec)
        if ms is not None:
            ms *= images / table.images_per_step
            if workers > 1 and known(key, policy):
                ms /= ddp_speedup(key, prec, policy, images, workers, card, run.cuda_graphs)
            elif workers > 1:
                ms /= workers
            return StepTime(ms, table.source, prec)
    if not known(key, policy):
        return None
    prec = f"{base}+compile" if run.compile else base
    return StepTime(step_estimate(key, prec, policy, images, card, run.cuda_graphs, workers).ms, ESTIMATE, prec)
