"""Glue for one run: data, trainer, checkpoints and TensorBoard around :func:`engine.fit`.

Shared by the single-process CLI and the Ray Train worker; no Ray here.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .checkpoint import CheckpointError, atomic_write_bytes, save_checkpoint
from .config import ConfigError, RunConfig
from .data import (DATASETS, DataError, DatasetSpec, ImageData, expand_labeled, load_dataset,
                   normalized_tensor, split_labeled, train_loader)
from .engine import NonFiniteLossError, Trainer, fit, resolve_device, summarize
from .tracking import Tracker, record_scalars

# Errors that are the user's to fix: the CLIs print them as one line, without a traceback.
USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError)
METRICS_FILE = "metrics.json"


@dataclass
class RunData:
    spec: DatasetSpec
    train: ImageData
    labeled_idx: np.ndarray  # after --expand-labels
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_run_data(cfg: RunConfig) -> RunData:
    """Datasets and the labeled split of ``cfg`` (the same on every process)."""
    spec = DATASETS[cfg.dataset]
    train = load_dataset(cfg.dataset, cfg.data_dir, train=True, download=cfg.download)
    test = load_dataset(cfg.dataset, cfg.data_dir, train=False, download=cfg.download)
    try:
        labeled = split_labeled(train.targets, cfg.num_labeled, cfg.seed)
    except ValueError as e:
        raise ConfigError(f"num_labeled: {e}") from None
    labeled = expand_labeled(labeled, cfg.batch_size, cfg.eval_step, cfg.expand_labels)
    return RunData(spec, train, labeled, normalized_tensor(test, spec), torch.from_numpy(test.targets))


def step_batches(
    cfg: RunConfig, data: RunData, start_step: int, rank: int = 0, world_size: int = 1,
    device: torch.device | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's batches from ``start_step`` on (a pure function of the config and step)."""
    if cfg.aug_backend == "tensor":
        return DeviceBatches(cfg, data, start_step, device or torch.device("cpu"), rank, world_size)
    loader = train_loader(
        data.train, data.spec, data.labeled_idx,
        batch_size=cfg.batch_size, ulb_batch_size=cfg.unlabeled_batch_size, seed=cfg.seed,
        start_step=start_step, total_steps=cfg.total_steps, num_workers=cfg.num_workers,
        rank=rank, world_size=world_size,
    )
    return iter(loader)


class DeviceBatches:
    """``aug_backend: tensor``: the training set lives on the device as uint8 (in the crop
    layout of :class:`batch_augment.CropStore`) and each step's batch is augmented there, per
    sample, by :mod:`fixmatch_ray.batch_augment`.

    The step's indices come from the same :class:`data.StepBatchSampler` as the PIL path; the
    augmentation generator is seeded from ``(seed, step)``, so a resumed run continues the same
    stream. Every rank augments the whole global batch and keeps its slice, so the samples do
    not depend on the number of workers.
    """

    def __init__(self, cfg: RunConfig, data: RunData, start_step: int, device: torch.device,
                 rank: int = 0, world_size: int = 1):
        from .batch_augment import BatchAugmenter
        from .data import LABELED, StepBatchSampler

        self.cfg, self.device, self.step = cfg, device, start_step
        images = torch.from_numpy(data.train.images).permute(0, 3, 1, 2).contiguous().to(device)
        self.targets = torch.from_numpy(data.train.targets).to(device)
        self.sampler = StepBatchSampler(data.labeled_idx, len(data.train), cfg.batch_size,
                                        cfg.unlabeled_batch_size, cfg.seed, start_step, cfg.total_steps)
        self.augment = BatchAugmenter(data.spec.mean, data.spec.std, flip=data.spec.flip)
        self.store = self.augment.store(images)
        del images
        self.gen = torch.Generator(device=device)
        self.rank, self.world, self.labeled = rank, world_size, LABELED
        if cfg.batch_size % world_size or cfg.unlabeled_batch_size % world_size:
            raise ValueError(f"batches of {cfg.batch_size}/{cfg.unlabeled_batch_size} do not divide over {world_size} workers")

    def __iter__(self) -> "DeviceBatches":
        return self

    def _slice(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x) // self.world
        return x[self.rank * n:(self.rank + 1) * n]

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.step >= self.cfg.total_steps:
            raise StopIteration
        keys = self.sampler.keys(self.step)
        lb = torch.tensor([k[3] for k in keys if k[0] == self.labeled]).to(self.device, non_blocking=True)
        ulb = torch.tensor([k[3] for k in keys if k[0] != self.labeled]).to(self.device, non_blocking=True)
        self.gen.manual_seed(int(np.random.SeedSequence([self.cfg.seed, 0xA06, self.step]).generate_state(1)[0]))
        self.step += 1
        aug, store, gen = self.augment, self.store, self.gen
        return {
            "x_lb": self._slice(aug.weak(store, lb, gen)),
            "y_lb": self._slice(self.targets[lb]),
            "x_ulb_w": self._slice(aug.weak(store, ulb, gen)),
            "x_ulb_s": self._slice(aug.strong(store, ulb, gen)),
            "y_ulb": self._slice(self.targets[ulb]),
        }


def format_record(rec: dict[str, Any], total_steps: int) -> str:
    return (
        f"epoch {rec['epoch']} step {rec['step']}/{total_steps} | loss {rec['train_loss']:.4f} "
        f"(x {rec['train_loss_x']:.4f} u {rec['train_loss_u']:.4f}) mask {rec['mask_rate']:.3f} "
        f"lr {rec['lr']:.5f} | test acc {rec['test_acc']:.2f} loss {rec['test_loss']:.4f} "
        f"median20 {rec['median20_acc']:.2f} best {rec['best_acc']:.2f} | {rec['images_per_s']:.0f} img/s"
    )


def write_metrics(out: Path, cfg: RunConfig, history: list[dict[str, Any]]) -> dict[str, Any]:
    doc = {"config": cfg.to_dict(), "summary": summarize(history), "history": history}
    atomic_write_bytes(out / METRICS_FILE, json.dumps(doc, indent=1).encode())
    return doc


def run_local(cfg: RunConfig, state: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or continue from ``state``) one training in this process; returns the summary."""
    from tqdm import tqdm

    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    data = load_run_data(cfg)  # before anything is written: a bad dataset leaves no directory
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    trainer = Trainer(cfg, device)
    if state is not None:
        trainer.load_state_dict(state)
    tracker = Tracker(out)
    bar = tqdm(total=cfg.total_steps, initial=trainer.step, disable=not progress, file=sys.stderr,
               dynamic_ncols=True, unit="step")

    def on_progress(step: int, means: dict[str, float]) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{means['loss']:.3f}", mask=f"{means['mask']:.2f}")

    def on_epoch(rec: dict[str, Any]) -> None:
        save_checkpoint(out, trainer.state_dict())
        tracker.scalars(record_scalars(rec), rec["step"])
        write_metrics(out, cfg, trainer.history)
        bar.write(format_record(rec, cfg.total_steps), file=sys.stderr)

    try:
        batches = step_batches(cfg, data, trainer.step, device=device)
        fit(trainer, batches, (data.x_test, data.y_test), on_epoch, on_progress,
            check_every=min(50, cfg.eval_step))
    finally:
        bar.close()
        tracker.close()
    return write_metrics(out, cfg, trainer.history)["summary"]
