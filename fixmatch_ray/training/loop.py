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

from ..config import RunConfig
from ..data.batched import BatchAugmenter, DeviceBatches, normalized_tensor
from ..data.datasets import DatasetSpec, ImageData, get_spec, load_dataset
from ..data.sampling import StepBatchSampler, train_loader
from ..data.splits import expand_labeled, split_labeled
from ..errors import ConfigError
from ..tracking.tensorboard import Tracker, record_scalars
from .checkpoint import atomic_write_bytes, save_checkpoint
from .engine import Trainer, fit, resolve_device, summarize

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
    spec = get_spec(cfg.dataset)
    train = load_dataset(cfg.dataset, cfg.data_dir, "train", download=cfg.download)
    test = load_dataset(cfg.dataset, cfg.data_dir, "test", download=cfg.download)
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
        sampler = StepBatchSampler(data.labeled_idx, len(data.train), cfg.batch_size, cfg.unlabeled_batch_size,
                                   cfg.seed, start_step, cfg.total_steps)
        augmenter = BatchAugmenter(data.spec.mean, data.spec.std, flip=data.spec.flip)
        return DeviceBatches(data.train, sampler, augmenter, cfg.seed, device or torch.device("cpu"), rank, world_size)
    loader = train_loader(
        data.train, data.spec, data.labeled_idx,
        batch_size=cfg.batch_size, ulb_batch_size=cfg.unlabeled_batch_size, seed=cfg.seed,
        start_step=start_step, total_steps=cfg.total_steps, num_workers=cfg.num_workers,
        rank=rank, world_size=world_size,
    )
    return iter(loader)


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
