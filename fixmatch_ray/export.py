"""A trained run's EMA model as a file other code loads without this project.

    python -m fixmatch_ray.export RUN_OR_CHECKPOINT --format torchscript|onnx|state_dict [--out DIR]

Writes into ``DIR`` (default ``RUN/export``) ``model.torchscript.pt`` (``torch.jit.load``: plain
torch), ``model.onnx`` (any ONNX runtime; a dynamic batch axis) or ``model.state_dict.pt`` (the
weights, for this project's network), and beside it ``model.json``: class names, image size,
mean and std, and the input the model takes (float32 ``(N, 3, S, S)``, RGB / 255 then
``(x - mean) / std`` per channel; it returns logits). The ONNX file is checked with onnxruntime
where installed (the ``onnx`` extra): its outputs on a batch must match torch's. Each file is
written whole (temporary file, then renamed).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

import torch

from .errors import UserError
from .inference import TrainedModel, load_trained
from .storage import atomic_write_bytes

FORMATS = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx", "state_dict": "model.state_dict.pt"}
META_FILE = "model.json"
ONNX_TOLERANCE = 1e-4  # largest |logit difference| between onnxruntime and torch accepted


def example_batch(model: TrainedModel, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, model.image_size, model.image_size, generator=g)


def _torchscript(model: TrainedModel) -> bytes:
    # TorchScript is what plain torch loads everywhere; torch's notice that it prefers torch.export is not the user's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model.net, example_batch(model))
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def _onnx(model: TrainedModel) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript-based exporter: no onnxscript tracing of the network needed
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.net, (example_batch(model),), buf, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return buf.getvalue()


def check_onnx(model: TrainedModel, data: bytes) -> float | None:
    """The largest |logit difference| between onnxruntime and torch on a batch (None without onnxruntime)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    x = example_batch(model, 3)
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = model.net(x).numpy()
    return float(abs(got - want).max())


def export(run: str, fmt: str, out: str | None = None) -> tuple[Path, float | None]:
    """Write the model in ``fmt`` and its ``model.json``; (the model file, the ONNX check's difference)."""
    model = load_trained(run)
    where = Path(out) if out else (model.source.parent / "export")
    where.mkdir(parents=True, exist_ok=True)
    diff = None
    if fmt == "torchscript":
        data = _torchscript(model)
    elif fmt == "onnx":
        data = _onnx(model)
        diff = check_onnx(model, data)
        if diff is not None and diff > ONNX_TOLERANCE:
            raise UserError(f"the ONNX model's logits differ from torch's by {diff:.2e} (> {ONNX_TOLERANCE}); not written")
    else:
        buf = io.BytesIO()
        torch.save(model.net.state_dict(), buf)
        data = buf.getvalue()
    meta = {**model.meta(), "format": fmt, "config": model.config}
    atomic_write_bytes(where / FORMATS[fmt], data)
    atomic_write_bytes(where / META_FILE, json.dumps(meta, indent=1).encode())
    return where / FORMATS[fmt], diff


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fixmatch_ray.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory (its newest checkpoint) or a checkpoint file")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--out", help="output directory (default RUN/export)")
    args = p.parse_args(argv)
    try:
        path, diff = export(args.run, args.format, args.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    check = "" if args.format != "onnx" else (
        " (onnxruntime not installed: not checked)" if diff is None else f" (onnxruntime matches torch: max |diff| {diff:.1e})")
    print(f"{args.format} model -> {path}, classes and normalisation -> {path.parent / META_FILE}{check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
