"""A trained run as a model to apply: its EMA network, class names, image size and normalisation.

Shared by ``predict`` and ``export``. The network is rebuilt from the checkpoint's resolved config
and loaded with the checkpoint's EMA weights (the raw weights when the run had no EMA); the class
names and the normalisation come from the run record's ``dataset`` block (the registry's spec
for a record written before it had one). No Ray here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError, DataError
from .training.checkpoint import load_checkpoint
from .training.record import RECORD_FILE


@dataclass
class TrainedModel:
    net: nn.Module  # in eval mode, on the CPU: float32 (N, 3, S, S) normalised images -> logits
    classes: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    config: dict[str, Any]
    step: int
    source: Path  # the checkpoint file

    def meta(self) -> dict[str, Any]:
        """What a user needs beside the weights: input layout, normalisation and class names."""
        return {"classes": self.classes, "image_size": self.image_size, "mean": list(self.mean),
                "std": list(self.std), "input": "float32 (N, 3, image_size, image_size): RGB / 255, then "
                "(x - mean) / std per channel", "output": "logits (N, classes)", "step": self.step,
                "arch": self.config["arch"], "checkpoint": str(self.source)}


def _record_near(checkpoint: Path) -> dict[str, Any] | None:
    """The run record of a checkpoint: in its folder, or the run folder above a ``checkpoint_*``."""
    for where in (checkpoint.parent, checkpoint.parent.parent):
        if (where / RECORD_FILE).is_file():
            return json.loads((where / RECORD_FILE).read_text())
    return None


def _dataset_block(config: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    if record and record.get("dataset"):
        return record["dataset"]
    from .data.datasets import get_spec

    spec = get_spec(config["dataset"])
    if spec.from_files is not None:
        raise CheckpointError(f"no run record ({RECORD_FILE}) beside the checkpoint: a {spec.name} dataset's "
                              "classes and normalisation are kept there")
    return spec.describe()


def load_trained(path: str | os.PathLike) -> TrainedModel:
    """The model of a run directory (its newest checkpoint) or of one checkpoint file."""
    from .config import RunConfig
    from .models import build_model

    state, source = load_checkpoint(path)
    config = state["config"]
    data = _dataset_block(config, _record_near(source))
    cfg = RunConfig.from_dict({k: v for k, v in config.items()}, where=str(source))
    net = build_model(cfg.arch, data["num_classes"], cfg.depth, cfg.width, cfg.cardinality,
                      bn_momentum=cfg.bn_momentum, scales=cfg.scales)
    net.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
    return TrainedModel(net.eval(), [str(c) for c in data["classes"]], int(data["image_size"]),
                        tuple(data["mean"]), tuple(data["std"]), config, int(state["step"]), source)


def image_files(inputs: Sequence[str]) -> list[str]:
    """The files named, and every file under the folders named (sorted, dot-names skipped)."""
    from .data.datasets.layout import walk_files

    out = []
    for item in inputs:
        if os.path.isdir(item):
            out += walk_files(item)
        elif os.path.isfile(item):
            out.append(item)
        else:
            raise DataError(f"{item} does not exist; expected image files or folders of them")
    if not out:
        raise DataError(f"no image files in {', '.join(inputs)}")
    return out


def decoded_batches(files: Sequence[str], image_size: int, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 ``(B, S, S, 3)`` batches of ``files``, decoded exactly as the training cache decodes."""
    from .data.datasets.imagecache import _decode

    for lo in range(0, len(files), batch_size):
        yield np.stack([_decode(f, image_size) for f in files[lo:lo + batch_size]])


def logits_of(model: TrainedModel, batch_u8: np.ndarray, device: torch.device) -> torch.Tensor:
    """The model's float32 logits of a uint8 NHWC batch (normalised as in training)."""
    from .data.normalize import normalize

    x = normalize(torch.from_numpy(batch_u8).permute(0, 3, 1, 2).to(device), model.mean, model.std)
    with torch.no_grad():
        return model.net(x.contiguous(memory_format=torch.channels_last)).float()
