"""Single-run CLI with the flags of the reference ``train.py`` (kekmodel/FixMatch-pytorch).

    python -m fixmatch_ray.train --dataset cifar10 --num-labeled 4000 --arch wideresnet \
        --batch-size 64 --lr 0.03 --expand-labels --seed 5 --out results/cifar10@4000.5

Writes ``config.yaml``, ``checkpoint.pt`` (full state, every eval epoch), ``metrics.json`` and
TensorBoard scalars into ``--out``; ``--resume OUT`` continues exactly where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import ConfigError, RunConfig
from .config.cli import add_config_flags, flag_of
from .config.strict import keys_of
from .config.tracking import TrackingSpec
from .storage import is_uri, local_path
from .tracking import TRACKERS, TrackedRun, check_tracking, trackers_for

# Flags of the reference that only made sense for apex or torch.distributed.launch.
IGNORED_FLAGS = {
    "opt_level": "--opt_level is an apex setting; native AMP is used (--amp)",
    "local_rank": "--local_rank belongs to torch.distributed.launch; use --ddp-workers N instead",
    "start_epoch": "--start-epoch is ignored; a resumed run restores its epoch from the checkpoint",
}
# --tracking NAME turns a tracker on; its options' flags (--mlflow-uri: destination mlflow.tracking_uri) fill its block
TRACKING_FLAGS = ("tracking", "tracking_config")
# What a resumed run may change: how it runs, not what it computes.
RESUME_OVERRIDABLE = {"num_workers", "device", "data_dir", "download", "eval_batch_size", "compile", "checkpoint_every",
                      "cuda_graphs"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fixmatch_ray.train",
        description="One FixMatch run (flags of the reference train.py).",
        argument_default=argparse.SUPPRESS,  # only flags the user gave end up in the namespace
    )
    add_config_flags(p, RunConfig)  # every run-config field, with the reference's flag names
    add_algorithm_flags(p)
    add = p.add_argument
    add("--resume", help="continue the run in this output directory (or checkpoint file)")
    add("--gpu-id", type=int, help="CUDA device index (reference flag)")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--ddp-workers", type=int, help="run through Ray Train on N DDP workers (local Ray if none)")
    add("--ddp-gpu", action="store_true", help="with --ddp-workers: one GPU per worker (NCCL)")
    add("--max-failures", type=int, help="with --ddp-workers: worker failures to recover from (3)")
    add("--address", help="with --ddp-workers: Ray cluster address (default $RAY_ADDRESS or local)")
    add("--tracking", action="append", choices=TRACKERS.names(),
        help="also record the run in this tracker (repeat for several; TensorBoard always)")
    for name in TRACKERS:
        add_config_flags(p, TRACKERS[name].Options, prefix=name)
    add("--tracking-config", help="YAML with a block per tracker (mlflow:, wandb:...), as a sweep file's tracking: block")
    add("--opt_level", "--opt-level", dest="opt_level", help=argparse.SUPPRESS)
    add("--local_rank", "--local-rank", dest="local_rank", type=int, help=argparse.SUPPRESS)
    add("--start-epoch", dest="start_epoch", type=int, help=argparse.SUPPRESS)
    return p


def add_algorithm_flags(p: argparse.ArgumentParser) -> None:
    """A flag per option of every registered algorithm (one for an option several algorithms share,
    its help naming them); the selected algorithm's ``Options`` judges the value."""
    from .algorithms import ALGORITHMS

    owners: dict[str, list[str]] = {}
    for name in ALGORITHMS:
        for key in keys_of(ALGORITHMS[name].Options):
            owners.setdefault(key, []).append(name)
    added = set(keys_of(RunConfig))
    for name in ALGORITHMS:
        added |= add_config_flags(p, ALGORITHMS[name].Options, skip=added,
                                  note=lambda key: f" [--algorithm {'/'.join(owners[key])}]")


def config_from_args(ns: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the parsed flags into RunConfig fields and run options (resume, progress...)."""
    given = dict(vars(ns))
    for flag, note in IGNORED_FLAGS.items():
        if given.pop(flag, None) is not None:
            print(f"note: {note}", file=sys.stderr)
    options = {k: given.pop(k) for k in list(given) if "." in k or k in (
        "resume", "no_progress", "ddp_workers", "ddp_gpu", "max_failures", "address", *TRACKING_FLAGS)}
    gpu = given.pop("gpu_id", None)
    if gpu is not None and "device" not in given:
        import torch

        given["device"] = f"cuda:{gpu}" if torch.cuda.is_available() else "cpu"
    return given, options


def prepare(given: dict[str, Any], resume: str | None) -> tuple[RunConfig, dict | None]:
    """The run's resolved config, and the checkpoint state when resuming."""
    from .training.checkpoint import find_checkpoint, load_checkpoint

    if resume is None:
        cfg = RunConfig.from_dict(given, where="flags").resolved()
        if find_checkpoint(cfg.out) is not None:
            raise ConfigError(
                f"--out {cfg.out!r} already holds a run; continue it with --resume {cfg.out} "
                "or choose another --out"
            )
        return cfg, None
    state, path = load_checkpoint(resume)
    saved = RunConfig.from_dict(state["config"], where=str(path))
    keys = saved.to_dict()
    for key, value in given.items():
        if key not in RESUME_OVERRIDABLE and key != "out" and keys.get(key) != value:
            raise ConfigError(
                f"--{key.replace('_', '-')} {value} differs from the resumed run's {keys.get(key)}; "
                "a resumed run keeps its config (start a new --out to change it)"
            )
    overrides = {k: v for k, v in given.items() if k in RESUME_OVERRIDABLE}
    out = resume if Path(resume).is_dir() else path.parent
    return saved.replace(out=str(out), **overrides), state


def tracking_from_options(options: dict[str, Any]) -> TrackingSpec:
    """The run's tracking block from ``--tracking`` and its trackers' flags, or ``--tracking-config``."""
    from .config.strict import load_yaml

    names = options.get("tracking") or []
    flags = {k: v for k, v in options.items() if "." in k}  # <tracker>.<option>
    if options.get("tracking_config"):
        if names or flags:
            raise ConfigError("--tracking-config: give the trackers there or with --tracking flags, not both")
        return TrackingSpec.parse(load_yaml(options["tracking_config"]), options["tracking_config"])
    block: dict[str, dict[str, Any]] = {name: {} for name in names}
    for dest, value in flags.items():
        tracker, key = dest.split(".", 1)
        if tracker not in block:
            field = next(f for f in dataclasses.fields(TRACKERS[tracker].Options) if f.name == key)
            raise ConfigError(f"{flag_of(field, tracker)} needs --tracking {tracker}")
        block[tracker][key] = value
    return TrackingSpec.parse(block, "flags")


def tracked_run(out: str) -> TrackedRun:
    """What the trackers know of a single run: its key (its absolute directory or URI), its name (the
    last part) and, when local, its directory for their files."""
    key = out if is_uri(out) else os.path.abspath(local_path(out))
    return TrackedRun(key, os.path.basename(key.rstrip("/")), local_dir=None if is_uri(out) else local_path(out))


def run_distributed(cfg: RunConfig, options: dict[str, Any], tracking: TrackingSpec) -> dict[str, Any]:
    """``--ddp-workers N``: the same run as a Ray Train job (see :mod:`.launch.worker`)."""
    from .config import Resources
    from .launch.train_job import run_ray
    from .training.loop import load_run_data

    resources = Resources(workers=options["ddp_workers"], gpus_per_worker=1.0 if options.get("ddp_gpu") else 0.0)
    resources.check(cfg)
    load_run_data(cfg)  # a missing dataset or an impossible split fails here, before Ray starts
    # workers run in other directories: give them absolute paths
    cfg = cfg.replace(data_dir=os.path.abspath(cfg.data_dir))
    return run_ray(cfg, resources, options.get("max_failures", 3), options.get("address"), tracking=tracking)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()  # reads the registries: a broken plugin is one line
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ns = parser.parse_args(argv)
    try:
        given, options = config_from_args(ns)
        tracking = tracking_from_options(options)
        check_tracking(tracking)  # a missing package or a store MLflow refuses: one line, before training
        cfg, state = prepare(given, options.get("resume"))
        if "ddp_workers" in options:
            summary = run_distributed(cfg, options, tracking)
        else:
            from .training.loop import run_local

            trackers = trackers_for(tracking, tracked_run(cfg.out))
            summary = run_local(cfg, state, progress=not options.get("no_progress", False), trackers=trackers)
    except KeyboardInterrupt:
        print("\ninterrupted; the last eval epoch's checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130
    except Exception as e:  # user-facing errors are one line; bugs keep their traceback
        from .errors import UserError
        from .launch.cluster import ClusterError

        if not isinstance(e, UserError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, (ConfigError, ClusterError)) else 1  # bad input: flags or the cluster to join
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
