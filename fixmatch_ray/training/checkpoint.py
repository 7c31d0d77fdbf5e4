"""Checkpoints with the full training state, written atomically, with a fallback copy.

A checkpoint is one ``torch.save`` dict: model, EMA, optimizer, grad scaler, step, RNG states,
eval history and the resolved config. Files are written to a temporary name and renamed, so a
reader never sees half a file; the previous checkpoint is kept as ``*.prev.pt`` and is used if
the latest one turns out unreadable.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..storage import atomic_write_bytes
from ..storage.layout import CHECKPOINT, PREVIOUS_CHECKPOINT, RAY_CHECKPOINTS


def snapshot_to_cpu(obj: Any) -> Any:
    """A deep copy of a state dict with every tensor copied to host memory: what a background
    upload serialises while training goes on (live parameters and momenta keep changing)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Save ``state`` as ``directory/checkpoint.pt``, keeping the one before as ``.prev.pt``."""
    directory = Path(directory)
    buf = io.BytesIO()
    torch.save(state, buf)
    latest = directory / CHECKPOINT
    if latest.exists():
        os.replace(latest, directory / PREVIOUS_CHECKPOINT)
    atomic_write_bytes(latest, buf.getvalue())
    return latest


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read one checkpoint file; anything unreadable is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, garbage bytes, pickle errors...
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable ({type(e).__name__})") from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a fixmatch_ray checkpoint")
    return state


def candidates(directory: str | os.PathLike) -> list[Path]:
    """Checkpoint files of a run directory, newest first.

    A local run keeps ``checkpoint.pt`` and ``checkpoint.prev.pt``; a Ray Train run keeps
    ``checkpoint_<timestamp>/checkpoint.pt`` folders (names sort by time).
    """
    directory = Path(directory)
    files = [directory / CHECKPOINT, directory / PREVIOUS_CHECKPOINT]
    files += sorted(directory.glob(f"{RAY_CHECKPOINTS}/{CHECKPOINT}"), key=lambda p: p.parent.name, reverse=True)
    return [f for f in files if f.is_file()]


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """Load a checkpoint file, or the newest readable one of a run directory.

    Returns the state and the file it came from. A corrupt newest checkpoint is reported on
    stderr and the one before it is used.
    """
    path = Path(path)
    if not path.is_dir():
        return load_state(path), path
    files = candidates(path)
    if not files:
        raise CheckpointError(f"no checkpoint in {str(path)!r}")
    errors = []
    for f in files:
        try:
            state = load_state(f)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors:
            import sys

            print(f"warning: {'; '.join(errors)}; falling back to {f}", file=sys.stderr)
        return state, f
    raise CheckpointError(f"no readable checkpoint in {str(path)!r}: " + "; ".join(errors))


def find_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest checkpoint file a run directory holds, if any."""
    files = candidates(directory) if Path(directory).is_dir() else []
    return files[0] if files else None
