"""Single-run CLI with the flags of the reference ``train.py`` (kekmodel/FixMatch-pytorch).

    python -m fixmatch_ray.train --dataset cifar10 --num-labeled 4000 --arch wideresnet \
        --batch-size 64 --lr 0.03 --expand-labels --seed 5 --out results/cifar10@4000.5

Writes ``config.yaml``, ``checkpoint.pt`` (full state, every eval epoch), ``metrics.json`` and
TensorBoard scalars into ``--out``; ``--resume OUT`` continues exactly where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import ConfigError, RunConfig
from .config.cli import add_config_flags
from .config.tracking import TrackingSpec
from .storage import is_uri, local_path
from .tracking import check_tracking, trackers_for

# Flags of the reference that only made sense for apex or torch.distributed.launch.
IGNORED_FLAGS = {
    "opt_level": "--opt_level is an apex setting; native AMP is used (--amp)",
    "local_rank": "--local_rank belongs to torch.distributed.launch; use --ddp-workers N instead",
    "start_epoch": "--start-epoch is ignored; a resumed run restores its epoch from the checkpoint",
}
# --tracking NAME turns a tracker on; these flags fill its block (flag: (tracker, key)).
TRACKING_FLAGS = {"tracking": None, "tracking_config": None, "mlflow_uri": ("mlflow", "tracking_uri"),
                  "mlflow_experiment": ("mlflow", "experiment"), "wandb_project": ("wandb", "project"),
                  "wandb_mode": ("wandb", "mode")}
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
    add = p.add_argument
    add("--resume", help="continue the run in this output directory (or checkpoint file)")
    add("--gpu-id", type=int, help="CUDA device index (reference flag)")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--ddp-workers", type=int, help="run through Ray Train on N DDP workers (local Ray if none)")
    add("--ddp-gpu", action="store_true", help="with --ddp-workers: one GPU per worker (NCCL)")
    add("--max-failures", type=int, help="with --ddp-workers: worker failures to recover from (3)")
    add("--address", help="with --ddp-workers: Ray cluster address (default $RAY_ADDRESS or local)")
    add("--tracking", action="append", choices=["mlflow", "wandb"],
        help="also record the run in MLflow or W&B (repeat for both; TensorBoard always)")
    add("--mlflow-uri", help="with --tracking mlflow: tracking URI (default MLflow's: $MLFLOW_TRACKING_URI)")
    add("--mlflow-experiment", help="with --tracking mlflow: experiment name (default 'fixmatch')")
    add("--wandb-project", help="with --tracking wandb: the W&B project (required)")
    add("--wandb-mode", choices=["online", "offline"], help="with --tracking wandb: online (default) or offline")
    add("--tracking-config", help="YAML with mlflow:/wandb: blocks, as a sweep file's tracking: block")
    add("--opt_level", "--opt-level", dest="opt_level", help=argparse.SUPPRESS)
    add("--local_rank", "--local-rank", dest="local_rank", type=int, help=argparse.SUPPRESS)
    add("--start-epoch", dest="start_epoch", type=int, help=argparse.SUPPRESS)
    return p


def config_from_args(ns: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the parsed flags into RunConfig fields and run options (resume, progress...)."""
    given = dict(vars(ns))
    for flag, note in IGNORED_FLAGS.items():
        if given.pop(flag, None) is not None:
            print(f"note: {note}", file=sys.stderr)
    options = {k: given.pop(k) for k in ("resume", "no_progress", "ddp_workers", "ddp_gpu", "max_failures",
                                         "address", *TRACKING_FLAGS) if k in given}
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
    for key, value in given.items():
        if key not in RESUME_OVERRIDABLE and key != "out" and getattr(saved, key) != value:
            raise ConfigError(
                f"--{key.replace('_', '-')} {value} differs from the resumed run's {getattr(saved, key)}; "
                "a resumed run keeps its config (start a new --out to change it)"
            )
    overrides = {k: v for k, v in given.items() if k in RESUME_OVERRIDABLE}
    out = resume if Path(resume).is_dir() else path.parent
    return saved.replace(out=str(out), **overrides), state


def tracking_from_options(options: dict[str, Any]) -> TrackingSpec:
    """The run's MLflow / W&B block from ``--tracking`` and its flags, or ``--tracking-config``."""
    from .config.strict import from_mapping, load_yaml

    names = options.get("tracking") or []
    flags = {k: v for k, v in options.items() if TRACKING_FLAGS.get(k)}
    if options.get("tracking_config"):
        if names or flags:
            raise ConfigError("--tracking-config: give the trackers there or with --tracking flags, not both")
        doc = load_yaml(options["tracking_config"])
        return from_mapping(TrackingSpec, {} if doc is None else doc, options["tracking_config"])
    block: dict[str, dict[str, Any]] = {name: {} for name in names}
    for flag, value in flags.items():
        tracker, key = TRACKING_FLAGS[flag]
        if tracker not in block:
            raise ConfigError(f"--{flag.replace('_', '-')} needs --tracking {tracker}")
        block[tracker][key] = value
    if "wandb" in block and "project" not in block["wandb"]:
        raise ConfigError("--tracking wandb needs --wandb-project NAME (the W&B project the run goes to)")
    return from_mapping(TrackingSpec, block, "flags")


def run_key(out: str) -> tuple[str, str]:
    """The run's key for trackers (its absolute directory or URI) and its name (the last part)."""
    key = out if is_uri(out) else os.path.abspath(local_path(out))
    return key, os.path.basename(key.rstrip("/"))


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
    ns = build_parser().parse_args(argv)
    try:
        given, options = config_from_args(ns)
        tracking = tracking_from_options(options)
        check_tracking(tracking)  # a missing package or a store MLflow refuses: one line, before training
        cfg, state = prepare(given, options.get("resume"))
        if "ddp_workers" in options:
            summary = run_distributed(cfg, options, tracking)
        else:
            from .training.loop import run_local

            trackers = trackers_for(tracking, *run_key(cfg.out), local_dir=cfg.out)
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
