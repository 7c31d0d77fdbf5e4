"""Quiet Ray output: what a sweep's driver and its Train runs do not print. Best effort.

Ray has no switch for most of what it prints, so everything here matches Ray's output by logger
name or message text, or wraps one private object. When a Ray version renames or moves one of
them, its filter matches nothing and that output shows again; nothing else breaks.
``tests/launch/test_ray_internals.py`` pins each name and text against the installed Ray, so an upgrade that
moves one fails there, loudly. What is dropped stays in the Ray session's log files. No Ray
import here: :mod:`.cluster`, which starts Ray, hands over the one Ray object wrapped.

Ray internals this module touches, each in one place:

- :func:`_wrap_deduplicators`: the driver's two log deduplicators,
  ``ray._private.worker.{stdout,stderr}_deduplicator`` (private objects, wrapped);
- :data:`PRIVATE_LOGGERS`: loggers of Ray's private modules, by name (the token-auth notice,
  Ray Train's per-report INFO lines);
- undocumented switches and texts of public modules: ``RAY_AIR_NEW_OUTPUT=0`` (Tune's classic
  console), :data:`TUNE_NOTICES` (Tune's own messages), :data:`KNOWN_NOISE` (lines of Ray's
  processes, through ``RAY_DEDUP_LOGS_SKIP_REGEX``).
"""
from __future__ import annotations

import logging
import os

# Ray Train's console level in the sweep's Train runs (controller and workers): WARNING unless
# --verbose. Its session log files (logs/train/ray-train-sys-*.log) keep every level.
TRAIN_LOG_LEVEL_ENV = "FIXMATCH_RAY_TRAIN_LOG_LEVEL"

# Lines Ray's processes print that the driver would forward (``log_to_driver``) and that say nothing
# a sweep's user can act on. Ray matches these against each forwarded line (RAY_DEDUP_LOGS_SKIP_REGEX,
# read when ray is imported).
KNOWN_NOISE = (
    r"has constructor arguments in the object store",  # Train's PreemptionWatcher actor (core_worker.cc)
    r"PYTHON worker processes have been started",  # raylet: start-up concurrency on small machines
)

# Ray's own internal actors whose forwarded output a quiet driver drops: Train's placement-group
# janitor, whose monitor thread dies with a traceback when the state API is slow to answer (loaded
# machines); the sweep reaps orphaned placement groups itself.
QUIET_ACTORS = frozenset({"PlacementGroupCleaner"})

# Ray Train's controller warns, with the traceback, when a run stopped by SIGTERM loses its workers
# before their process group is torn down ("expected if one of the workers has crashed", its own
# words). A quiet driver drops that block: the sweep says itself that it was stopped and resumes.
BACKEND_SHUTDOWN_LOGGER = "ray.train.v2._internal.callbacks.backend_setup"
BACKEND_SHUTDOWN_NOTICE = "Graceful shutdown of backend failed."

# Ray 2.60 turns token authentication on for a local cluster and warns that it did, on every start.
# (Setting RAY_AUTH_MODE instead would not do: a driver that has imported ray keeps the mode it read
# then, and its own new cluster would refuse it.)
AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
AUTH_ENABLED_NOTICE = "Token authentication is enabled for this Ray cluster"

# Ray Train's INFO lines per report from every rank (the metrics dict, the checkpoint path); the
# sweep's progress table says it better. The context module logs under its file path, not its name.
TRAIN_STORAGE_LOGGER = "ray.train.v2._internal.execution.storage"
TRAIN_CONTEXT_MODULE = "ray.train.v2._internal.execution.context"
PRIVATE_LOGGERS = (AUTH_LOGGER, TRAIN_STORAGE_LOGGER, TRAIN_CONTEXT_MODULE)

# (logger, message fragments) of Tune's that a sweep drops whatever --verbose says: its restore hint
# (``Tuner.restore(path=..., trainable=...)``) is wrong for this tool (the same command resumes), its
# interrupt lines repeat what the driver says itself, and its closing warning that no trial has a
# ``result.json``/``progress.csv`` (13 lines on the quick demo) is about loggers turned off on
# purpose (the results are the run records).
TUNE_NOTICES = (
    ("ray.tune.tune", ("Tuner.restore(", "Stop signal received", "Trials did not complete")),
    ("ray.tune.analysis.experiment_analysis", ("Failed to fetch metrics for",)),
)

_QUIET = False


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes`` or holds one of ``fragments``."""

    def __init__(self, prefixes: tuple[str, ...] = (), fragments: tuple[str, ...] = ()):
        super().__init__()
        self.prefixes, self.fragments = prefixes, fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(self.prefixes) or any(f in message for f in self.fragments))


def quiet_output(verbose: bool = False) -> None:
    """Make a driver print only what matters; call before ``ray`` is imported.

    Unless ``verbose`` (or the variable is already set): Ray Train logs warnings and errors only
    (``ray.train.LoggingConfig`` of each Train run), forwarded lines matching :data:`KNOWN_NOISE`
    are dropped, and Tune uses its classic console output, which prints nothing at ``verbose=0``
    (the newer one prints its configuration box and a TensorBoard hint whatever the verbosity).
    """
    if verbose:
        os.environ.setdefault(TRAIN_LOG_LEVEL_ENV, "INFO")
        return
    os.environ.setdefault(TRAIN_LOG_LEVEL_ENV, "WARNING")
    os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", "|".join(KNOWN_NOISE))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger(AUTH_LOGGER).addFilter(_DropMessages(prefixes=(AUTH_ENABLED_NOTICE,)))
    global _QUIET
    _QUIET = True


def quiet_forwarded_output(ray_worker_module: object) -> None:
    """Before ``ray.init`` in a quiet driver: drop the forwarded output of :data:`QUIET_ACTORS` and
    the SIGTERM shutdown tracebacks (:func:`_without_sigterm_tracebacks`) and Ray Train's
    shutdown warning (:func:`_without_shutdown_warnings`). ``ray_worker_module``
    is ``ray._private.worker``."""
    if _QUIET:
        _wrap_deduplicators(ray_worker_module)


def _wrap_deduplicators(worker: object) -> None:
    """Ray has no public switch for one actor's output, so this wraps the driver's two log
    deduplicators of ``worker`` (``ray._private.worker``; they see each batch's actor name); if a
    Ray version moves them, nothing is dropped."""
    for name in ("stdout_deduplicator", "stderr_deduplicator"):
        dedup = getattr(worker, name, None)
        inner = getattr(dedup, "deduplicate", None)
        if inner is None or getattr(inner, "quiet_actors", False):
            continue

        def deduplicate(batch, inner=inner):
            if batch.get("actor_name") in QUIET_ACTORS:
                return []
            lines = _without_shutdown_warnings(_without_sigterm_tracebacks(batch.get("lines", [])))
            return inner({**batch, "lines": lines}) if lines else []

        deduplicate.quiet_actors = True  # type: ignore[attr-defined]
        dedup.deduplicate = deduplicate


def _without_sigterm_tracebacks(lines: list[str]) -> list[str]:
    """``lines`` less each "Exception ignored in" traceback raised by Ray's worker SIGTERM handler:
    a worker that Ray stops at the end of the job while Python runs a finaliser (a shutdown race
    in a process whose work is done; seen in test runs here). Other tracebacks stay."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("Exception ignored in"):
            end = min(_traceback_end(lines, i + 1) + 1, len(lines))  # and the exception's line (SystemExit: 1)
            if any(line.rstrip().endswith(", in sigterm_handler") for line in lines[i:end]):
                i = end
                continue
        out.append(lines[i])
        i += 1
    return out


def _traceback_end(lines: list[str], i: int) -> int:
    """The index of the first line from ``i`` on that is not part of a traceback's body (its
    "Traceback" line, indented frame lines, blank lines): the exception's own line, if any."""
    while i < len(lines) and (lines[i].startswith(("Traceback", " ")) or not lines[i].strip()):
        i += 1
    return i


def _without_shutdown_warnings(lines: list[str]) -> list[str]:
    """``lines`` less each :data:`BACKEND_SHUTDOWN_NOTICE` block: the notice, its traceback, the
    exception's line and its detail lines (tab-indented, and Ray's closing "The actor is dead
    because ..." line). Any other traceback stays."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith(BACKEND_SHUTDOWN_NOTICE):
            out.append(lines[i])
            i += 1
            continue
        i = _traceback_end(lines, i + 1)
        if i < len(lines) and lines[i].startswith("ray.exceptions."):
            i += 1
            while i < len(lines) and lines[i].startswith(("\t", "The actor is dead because")):
                i += 1
    return out


def drop_tune_notices() -> None:
    """Drop :data:`TUNE_NOTICES` (once per process)."""
    for logger, fragments in TUNE_NOTICES:
        log = logging.getLogger(logger)
        if not any(isinstance(f, _DropMessages) and f.fragments == fragments for f in log.filters):
            log.addFilter(_DropMessages(fragments=fragments))


def quiet_train_logs() -> None:
    """In a Train worker: Ray Train's per-report INFO lines (:data:`TRAIN_STORAGE_LOGGER`, and
    :data:`TRAIN_CONTEXT_MODULE`'s, which logs under its file path) at WARNING."""
    import importlib.util

    names = [TRAIN_STORAGE_LOGGER]
    try:
        spec = importlib.util.find_spec(TRAIN_CONTEXT_MODULE)
    except ImportError:
        spec = None
    if spec is not None and spec.origin:
        names.append(spec.origin)  # its __file__
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
