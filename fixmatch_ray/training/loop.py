"""The one run loop: data, trainer and sinks around :func:`.engine.fit`, for every launcher.

The single-process CLI (:func:`run_local`) and the Ray Train worker call :func:`run_training`
with their own sinks (checkpoint files or Ray reports, the run record, trackers, a progress bar);
which rank a sink runs on is decided here and nowhere else. No Ray here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..algorithms import LOCAL, Collective
from ..config import RunConfig
from ..config.datakeys import ALL_LABELS
from ..data.batched import BatchAugmenter, DeviceBatches, EvalImages
from ..data.datasets import DATASETS, DatasetSpec, ImageData
from ..data.datasets.layout import read_layout
from ..data.policies import Policy, build_policy
from ..data.sampling import StepBatchSampler, train_loader
from ..data.splits import expand_labeled
from ..data.validation import hold_out
from ..errors import ConfigError
from ..storage.layout import CONFIG_FILE
from ..tracking import Tracker, tensorboard
from .engine import Engine, fit, resolve_device, summarize
from .sinks import CheckpointSink, ProgressSink, RecordSink, Sink, TrackerSink


@dataclass
class RunData:
    spec: DatasetSpec
    train: ImageData  # the unlabeled set; the labeled pool is its first part (the train set)
    labeled_idx: np.ndarray  # after --expand-labels
    test: ImageData
    val: ImageData | None = None  # the validation set (val_size, or a folder dataset's val/)


def load_run_data(cfg: RunConfig) -> RunData:
    """Datasets, the validation hold-out and the labeled split of ``cfg`` (the same on every process)."""
    registered = DATASETS[cfg.dataset]
    if registered.from_files is not None:  # an impossible split is refused before any image is decoded
        layout = read_layout(cfg.data_dir)
        _splits(cfg, registered, np.array([c for _, c in layout.files["train"]]), bool(layout.files["val"]),
                layout.classes)
    spec = cfg.dataset_spec
    train = spec.load(cfg.data_dir, "train", cfg.download)
    test = spec.load(cfg.data_dir, "test", cfg.download)
    pool = train if spec.unlabeled_split is None else spec.load(cfg.data_dir, spec.unlabeled_split, cfg.download)
    has_val = bool(spec.facts.get("counts", {}).get("val"))  # a folder dataset's val/ (val.csv)
    val_idx, keep, labeled = _splits(cfg, spec, train.targets, has_val, spec.classes)
    if has_val:
        val = spec.load(cfg.data_dir, "val", cfg.download)
    elif val_idx is not None:
        val = ImageData(train.images[val_idx], train.targets[val_idx])
        kept = ImageData(train.images[keep], train.targets[keep])
        rest = slice(len(train), len(pool))  # the unlabeled-only images after the train set
        pool = kept if len(pool) == len(train) else ImageData(np.concatenate([kept.images, pool.images[rest]]),
                                                              np.concatenate([kept.targets, pool.targets[rest]]))
    else:
        val = None
    labeled = expand_labeled(labeled, cfg.batch_size, cfg.eval_step, cfg.expand_labels)
    return RunData(spec, pool, labeled, test, val)


def _splits(cfg: RunConfig, spec: DatasetSpec, targets: np.ndarray, has_val: bool, classes: Any
            ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """(validation indices, the training indices left, labeled indices into those): ``val_size``
    held out first (:func:`~fixmatch_ray.data.validation.hold_out`; none where the dataset has its
    own val split), then the labeled split of the rest."""
    val_idx = keep = None
    if cfg.val_size is not None:
        if has_val:
            raise ConfigError(f"val_size: the dataset under {cfg.data_dir} has its own validation set (val/, "
                              "val.csv); remove val_size, or that part")
        if spec.num_seeds is not None:
            raise ConfigError(f"val_size: {spec.name} draws its labeled set from fixed folds; a validation "
                              "hold-out would change them")
        val_idx, keep = hold_out(targets, cfg.val_size, cfg.labeled_split_seed, classes)
        targets = targets[keep]
    num_labeled = len(targets) if cfg.num_labeled == ALL_LABELS else cfg.num_labeled
    try:
        labeled = spec.split(cfg.data_dir, targets, num_labeled, cfg.labeled_split_seed)
    except ValueError as e:
        raise ConfigError(f"num_labeled: {e}") from None
    return val_idx, keep, labeled


def labeled_distribution(data: RunData, num_classes: int) -> tuple[float, ...]:
    """The class frequencies of the labeled split (each labeled image once, whatever
    ``expand_labels`` repeats)."""
    counts = np.bincount(data.train.targets[np.unique(data.labeled_idx)], minlength=num_classes)
    return tuple(float(c) for c in counts / counts.sum())


def step_batches(
    cfg: RunConfig, data: RunData, start_step: int, rank: int = 0, world_size: int = 1,
    device: torch.device | None = None, policy: Policy | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's batches, with the views the algorithm names, from ``start_step`` on (a pure
    function of the config and step)."""
    policy = policy or build_policy(cfg.policy, strong_aug=cfg.strong_aug)
    views = cfg.views
    if cfg.aug_backend == "tensor":
        sampler = StepBatchSampler(data.labeled_idx, len(data.train), cfg.batch_size, cfg.unlabeled_batch_size,
                                   cfg.seed, start_step, cfg.total_steps)
        augmenter = BatchAugmenter(data.spec.mean, data.spec.std, flip=data.spec.flip, policy=policy,
                                   labeled=views.labeled, unlabeled=views.unlabeled)
        return DeviceBatches(data.train, sampler, augmenter, cfg.seed, device or torch.device("cpu"), rank, world_size,
                             cuda_graphs=cfg.cuda_graphs)
    loader = train_loader(
        data.train, data.spec, data.labeled_idx,
        batch_size=cfg.batch_size, ulb_batch_size=cfg.unlabeled_batch_size, seed=cfg.seed,
        start_step=start_step, total_steps=cfg.total_steps, num_workers=cfg.num_workers,
        rank=rank, world_size=world_size, policy=cfg.policy, pin_memory=(device is not None and device.type == "cuda"),
        strong_aug=cfg.strong_aug, labeled=views.labeled, unlabeled=views.unlabeled,
    )
    return iter(loader)


@dataclass(frozen=True)
class Ranks:
    """Which rank of how many this process is, and how it talks to the others."""

    rank: int = 0
    world_size: int = 1
    collective: Collective = LOCAL

    @property
    def chief(self) -> bool:
        return self.rank == 0


def sinks_for(sinks: Sequence[Sink], ranks: Ranks) -> list[Sink]:
    """The sinks this rank runs: all on rank 0, only those not marked ``chief_only`` elsewhere."""
    return [s for s in sinks if ranks.chief or not s.chief_only]


def run_training(cfg: RunConfig, device: torch.device, sinks: Sequence[Sink], ranks: Ranks = Ranks(),
                 state: dict[str, Any] | None = None, data: RunData | None = None,
                 wrap: Callable[[nn.Module], nn.Module] | None = None) -> Engine:
    """Train ``cfg`` (from ``state`` when given) to its last step, feeding ``sinks``.

    ``aug_backend: auto`` is resolved for ``device`` here: the trainer, its checkpoints and the run
    record carry the backend that ran."""
    cfg = cfg.replace(aug_backend=cfg.aug_backend_for(device.type))
    data = data or load_run_data(cfg)
    policy = build_policy(cfg.policy, device, cfg.strong_aug)
    trainer = Engine(cfg, device, wrap, num_unlabeled=len(data.train), collective=ranks.collective, policy=policy,
                     labeled_distribution=labeled_distribution(data, cfg.num_classes))
    if state is not None:
        trainer.load_state_dict(state)
    sinks = sinks_for(sinks, ranks)
    try:
        for s in sinks:
            s.start(trainer)
        batches = step_batches(cfg, data, trainer.step, ranks.rank, ranks.world_size, device, policy)

        def on_epoch(record: dict[str, Any]) -> None:
            for s in sinks:
                s.epoch(record, trainer)

        def on_progress(step: int, means: dict[str, float]) -> None:
            for s in sinks:
                s.progress(step, means)

        test = EvalImages(data.test, data.spec, device)  # resident on the device as uint8
        val = None if data.val is None else EvalImages(data.val, data.spec, device)
        fit(trainer, batches, test, on_epoch, on_progress, check_every=min(50, cfg.eval_step), val=val)
    finally:
        for s in sinks:
            s.close()
    return trainer


def run_local(cfg: RunConfig, state: dict[str, Any] | None = None, progress: bool = True,
              trackers: Sequence[Tracker] = ()) -> dict[str, Any]:
    """Run (or continue from ``state``) one training in this process, recording to TensorBoard and
    ``trackers`` (the tracking block's: :func:`fixmatch_ray.tracking.trackers_for`); returns the summary."""
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # --gpu-id N: kernels, NCCL and caches on that GPU, not GPU 0
    cfg = cfg.replace(aug_backend=cfg.aug_backend_for(device.type))
    data = load_run_data(cfg)  # before anything is written: a bad dataset leaves no directory
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / CONFIG_FILE)
    sinks = [CheckpointSink(out), RecordSink(str(out)), TrackerSink(lambda: tensorboard(str(out))),
             *(TrackerSink(lambda t=t: t) for t in trackers), ProgressSink(progress)]
    trainer = run_training(cfg, device, sinks, state=state, data=data)
    return summarize(trainer.history)
