"""Predictions of a trained run on image files.

    python -m fixmatch_ray.predict RUN_OR_CHECKPOINT IMAGES_OR_DIR... --out predictions.csv

With the run's EMA weights, in batches, on the CPU or a GPU (``--device``). Each image is decoded
as training decoded it (RGB, resized to the run's image size, bicubic) and normalised with the
run's mean and std. The CSV has one row per image: ``path``, ``predicted`` (the class name),
``confidence`` (its softmax probability), ``top_k`` (``name:probability`` pairs, best first,
separated by ``;``). Written whole (temporary file, then renamed) or not at all.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from typing import Sequence

import torch

from .errors import UserError
from .inference import decoded_batches, image_files, load_trained, logits_of
from .storage import atomic_write_bytes
from .training.engine import resolve_device


def predict(run: str, inputs: Sequence[str], batch_size: int = 256, device: str = "auto", top_k: int = 5,
            progress: bool = True) -> list[dict[str, object]]:
    """One row per image of ``inputs`` (files and folders), as the CSV holds them."""
    from rich.progress import Progress

    model = load_trained(run)
    dev = resolve_device(device)
    model.net.to(dev, memory_format=torch.channels_last)
    files = image_files(inputs)
    k = min(top_k, len(model.classes))
    rows: list[dict[str, object]] = []
    with Progress(transient=True, disable=not progress or len(files) < 2000) as bar:
        task = bar.add_task("predicting", total=len(files))
        for batch in decoded_batches(files, model.image_size, batch_size):
            probs = torch.softmax(logits_of(model, batch, dev), dim=1).cpu()
            top = probs.topk(k, dim=1)
            for values, indices in zip(top.values.tolist(), top.indices.tolist()):
                path = files[len(rows)]
                rows.append({"path": path, "predicted": model.classes[indices[0]], "confidence": values[0],
                             "top_k": ";".join(f"{model.classes[i]}:{v:.6f}" for v, i in zip(values, indices))})
            bar.advance(task, len(batch))
    return rows


def to_csv(rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=["path", "predicted", "confidence", "top_k"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fixmatch_ray.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory (its newest checkpoint) or a checkpoint file")
    p.add_argument("inputs", nargs="+", help="image files and folders of them (searched at any depth)")
    p.add_argument("--out", default="predictions.csv", help="the CSV to write (default predictions.csv)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--top-k", type=int, default=5, help="classes listed per image (default 5)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.batch_size <= 0 or args.top_k <= 0:
        print("error: --batch-size and --top-k must be positive", file=sys.stderr)
        return 2
    try:
        rows = predict(args.run, args.inputs, args.batch_size, args.device, args.top_k, not args.no_progress)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from pathlib import Path

    atomic_write_bytes(Path(args.out), to_csv(rows).encode())
    print(f"{len(rows)} predictions -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
