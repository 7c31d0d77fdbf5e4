"""Where an experiment and a run keep their files: every name, in this one module.

An experiment (one sweep) is ``<storage>/<name>``::

    sweep.yaml                         the sweep file it was started from (a resume must match it)
    lease.json                         the live driver's lease (launch/lease.py)
    trials.json                        the driver's view of each trial after Tune's run: ended / failed
    results.{md,csv,json,tex}          the report; acc_vs_step.png, <metric>_vs_step.png, ablation.png
    hparams/<trial>/                   TensorBoard HParams, one run per trial
    <trial name>_<trial id>/           Tune's own trial directories (error.txt, Tune's result.json)
    train/<trial name>-<trial id>/     each trial's Ray Train run: a run directory (below)

A run directory (``train --out DIR``, or one trial's Train run under ``train/``)::

    metrics.json                       the run record (training/record.py): the results' source
    config.yaml                        the resolved config (train only)
    checkpoint.pt, checkpoint.prev.pt  a local run's checkpoints (the newest and the one before)
    checkpoint_<time>/checkpoint.pt    a Ray Train run's checkpoints (Ray names the folders)
    tensorboard/                       a Ray Train run's TensorBoard events (a local run writes
                                       them in the run directory itself)

Names only: no I/O and nothing imported beyond :func:`~fixmatch_ray.storage.join`.
"""
from __future__ import annotations

from . import join

# -- an experiment -----------------------------------------------------------------------------
SWEEP_FILE = "sweep.yaml"
LEASE_FILE = "lease.json"
STATUS_FILE = "trials.json"  # {"runs": {run name: "ended" | "failed"}}
TRAIN_DIR = "train"
HPARAMS_DIR = "hparams"
RESULTS = "results"  # results.md, results.csv, results.json, results.tex
ACC_PLOT = "acc_vs_step.png"  # mean ± std curves across seeds, per setting
CURVE_PLOT = "{metric}_vs_step.png"  # one per training metric, under its record name (train_mask_vs_step.png)
ABLATION_PLOT = "ablation.png"  # error vs the axis the settings differ in

# -- a run -------------------------------------------------------------------------------------
RECORD_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
RAY_CHECKPOINTS = "checkpoint_*"  # Ray Train's checkpoint folders: checkpoint_<timestamp>, sorting by time
TB_DIR = "tensorboard"


def results_file(ext: str) -> str:
    """``results.md`` and its siblings."""
    return f"{RESULTS}.{ext}"


def train_runs(experiment: str) -> str:
    """The directory (or URI) that holds every Train run of an experiment."""
    return join(experiment, TRAIN_DIR)


def run_name(trial_name: str, trial_id: str) -> str:
    """A sweep trial's Train run: named after the Tune trial id, so a retried or restored trial
    finds its own checkpoints again."""
    return f"{trial_name}-{trial_id}"


def run_dir(experiment: str, trial_name: str, trial_id: str) -> str:
    """A sweep trial's run directory: ``<experiment>/train/<trial name>-<trial id>``."""
    return join(train_runs(experiment), run_name(trial_name, trial_id))


def trial_dirname(trial_name: str, trial_id: str) -> str:
    """Tune's directory of a trial: ``<trial name>_<trial id>`` (readable and unique)."""
    return f"{trial_name}_{trial_id}"


def trial_id_of(trial_path: str, trial_name: str) -> str:
    """The trial id in the path of trial ``trial_name``'s Tune directory (:func:`trial_dirname`).
    Tune's ids hold an underscore themselves (``e5a2b_00003``)."""
    return trial_path.rstrip("/").rsplit("/", 1)[-1].removeprefix(f"{trial_name}_")
