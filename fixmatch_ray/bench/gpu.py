"""``python -m fixmatch_ray.bench gpu``: what a FixMatch step costs on this GPU, and what a sweep would.

Per model (WRN-28-2 on CIFAR-10's shape, WRN-28-8 on CIFAR-100's) and precision (fp32 ``off``,
``bf16``, each eager and ``+compile``): ms per step through the real per-step path of a run
(:func:`.training.engine.run_steps`: the sampler's device tables, :class:`DeviceBatches`'
augmentation, the step, EMA and the loop's bookkeeping), in repeated windows (min and median);
the augmentation alone and the step alone on a fixed batch (the split); one evaluation and one
checkpoint (amortised over ``eval_step`` steps, reported apart); peak memory. Then the step rate of
1, 2, 4 trials packed on one GPU (separate processes, timed together) and the projected GPU-hours of
a sweep file. The images are synthetic (uint8 noise of the dataset's shape): the cost does not
depend on their content, and nothing is downloaded.

``--out FILE`` writes the ``--step-times`` table of ``sweep --dry-run`` ({"card", "images_per_step",
"step_ms": {model: {precision: median ms}}}), training steps only, as that plan counts them;
``--details FILE`` everything measured. ``--device cpu --quick`` runs the same code tiny on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import RunConfig, load_sweep
from ..errors import ConfigError

MODELS = {"wideresnet-28-2": ("cifar10", 28, 2), "wideresnet-28-8": ("cifar100", 28, 8),
          "wideresnet-10-1": ("cifar10", 10, 1)}  # the last: --quick's tiny stand-in
PRECISIONS = ("off", "bf16", "fp16")
PAPER_EVAL_STEP = 1024  # steps per evaluation (and checkpoint) in the paper's runs
NO_CUDA = "bench gpu needs a CUDA device; none is visible (try --device cpu --quick to check the code path)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny: WRN-10-1, batch 8, mu 2, 256 images, few steps")
    p.add_argument("--models", help=f"comma-separated, of {', '.join(MODELS)} (default the first two)")
    p.add_argument("--precisions", help="comma-separated: off, bf16, fp16, each optionally +compile "
                   "(default off,bf16,off+compile,bf16+compile)")
    p.add_argument("--steps", type=int, help="steps per timed window (default 50; quick 2)")
    p.add_argument("--windows", type=int, help="timed windows per figure (default 5; quick 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 20; quick 1)")
    p.add_argument("--images", type=int, help="training images resident on the device (default 50000; quick 256)")
    p.add_argument("--pack", help="trial counts to pack on one GPU, comma-separated (default 1,2,4; quick 1)")
    p.add_argument("--pack-model", default=None, help="model/precision packed, e.g. wideresnet-28-2:bf16 "
                   "(default the first model at bf16; quick: at off)")
    p.add_argument("--sweep", default="sweeps/paper.yaml", help="sweep file whose GPU-hours are projected")
    p.add_argument("--out", help="write the --step-times JSON of `sweep --dry-run` here")
    p.add_argument("--details", help="write every figure (windows, split, memory, packing, projection) here")
    p.add_argument("--packed-worker", help=argparse.SUPPRESS)  # internal: one packed trial's process


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    q = args.quick
    pick = lambda v, full, quick: v if v is not None else (quick if q else full)  # noqa: E731
    models = (args.models or ("wideresnet-10-1" if q else "wideresnet-28-2,wideresnet-28-8")).split(",")
    precs = (args.precisions or ("off,bf16" if q else "off,bf16,off+compile,bf16+compile")).split(",")
    for m in models:
        if m not in MODELS:
            raise ConfigError(f"--models: unknown {m!r}; expected some of {', '.join(MODELS)}")
    for pr in precs:
        if pr.removesuffix("+compile") not in PRECISIONS:
            raise ConfigError(f"--precisions: unknown {pr!r}; expected off, bf16 or fp16, optionally +compile")
    return {"models": models, "precisions": precs, "steps": pick(args.steps, 50, 2),
            "windows": pick(args.windows, 5, 2), "warmup": pick(args.warmup, 20, 1),
            "images": pick(args.images, 50_000, 256), "batch": 8 if q else 64, "mu": 2 if q else 7,
            "pack": [int(k) for k in (args.pack or ("1" if q else "1,2,4")).split(",")],
            "pack_model": args.pack_model or f"{models[0]}:{'off' if q else 'bf16'}"}


def run_config(model: str, precision: str, s: dict[str, Any]) -> RunConfig:
    ds, depth, width = MODELS[model]
    return RunConfig(dataset=ds, num_labeled=400 if ds == "cifar100" else 40, depth=depth, width=width, seed=0,
                     batch_size=s["batch"], mu=s["mu"], total_steps=10**7, amp=precision.removesuffix("+compile"),
                     compile=precision.endswith("+compile"), aug_backend="tensor", num_workers=0)


def synthetic_data(cfg: RunConfig, n: int):
    """A :class:`RunData` of ``n`` noise images of the dataset's shape, labeled pool its first part."""
    from ..data.datasets import ImageData, get_spec
    from ..training.loop import RunData

    spec, rng = get_spec(cfg.dataset), np.random.default_rng(0)
    make = lambda m: ImageData(rng.integers(0, 256, (m, 32, 32, 3), dtype=np.uint8),  # noqa: E731
                               rng.integers(0, cfg.num_classes, m).astype(np.int64))
    return RunData(spec, make(n), np.arange(min(n, cfg.num_labeled)), make(min(n, 10_000)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _windows(fn: Callable[[], Any], steps: int, windows: int, device: torch.device) -> list[float]:
    """ms per call of ``fn``, one figure per window of ``steps`` calls (device idle at both ends)."""
    out = []
    for _ in range(windows):
        _sync(device)
        tic = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        out.append(1000 * (time.perf_counter() - tic) / steps)
    return out


def _summary(ms: list[float]) -> dict[str, Any]:
    return {"min": min(ms), "median": statistics.median(ms), "windows": ms}


def measure(model: str, precision: str, s: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """One model at one precision: the loop, the split, evaluation, checkpoint and peak memory."""
    from ..data.batched import EvalImages
    from ..training.checkpoint import save_checkpoint
    from ..training.engine import StepSums, Engine, run_steps
    from ..training.loop import step_batches

    cfg = run_config(model, precision, s)
    data = synthetic_data(cfg, s["images"])
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Engine(cfg, device, num_unlabeled=len(data.train))
    batches = step_batches(cfg, data, 0, device=device)
    acc = StepSums(device)
    run_steps(trainer, batches, s["warmup"], acc)  # cuDNN autotuning, compilation, lazy tables
    loop = _windows(lambda: run_steps(trainer, batches, 1, acc), s["steps"], s["windows"], device)
    aug = _windows(lambda: next(batches), s["steps"], s["windows"], device)
    fixed = next(batches)
    model_ms = _windows(lambda: trainer.train_step(fixed), s["steps"], s["windows"], device)
    test = EvalImages(data.test, data.spec, device)
    eval_ms = _windows(lambda: (trainer.evaluate(test), trainer.evaluate(test, use_ema=False)), 1, 2, device)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_ms = _windows(lambda: save_checkpoint(tmp, trainer.state_dict()), 1, 2, device)
    per_eval = min(eval_ms) + min(ckpt_ms)  # an eval epoch ends with both evaluations and a checkpoint
    return {"loop_ms": _summary(loop), "aug_ms": _summary(aug), "step_on_fixed_batch_ms": _summary(model_ms),
            "eval_ms": min(eval_ms), "checkpoint_ms": min(ckpt_ms),
            "amortised_eval_checkpoint_ms_per_step": per_eval / PAPER_EVAL_STEP,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def packed_worker(args: argparse.Namespace) -> int:
    """One of k packed trials: warm up, wait for the others (a ready file each), time, write ms/step."""
    from ..training.engine import StepSums, Engine, run_steps
    from ..training.loop import step_batches

    s, device = _settings(args), torch.device(args.device)
    model, precision = s["pack_model"].split(":")
    folder, k = Path(args.packed_worker), s["pack"][0]
    cfg = run_config(model, precision, s)
    data = synthetic_data(cfg, s["images"])
    trainer, acc = Engine(cfg, device, num_unlabeled=len(data.train)), StepSums(device)
    batches = step_batches(cfg, data, 0, device=device)
    run_steps(trainer, batches, s["warmup"], acc)
    _sync(device)
    me = folder / f"ready-{os.getpid()}"
    me.touch()
    deadline = time.time() + 600
    while len(list(folder.glob("ready-*"))) < k and time.time() < deadline:
        time.sleep(0.01)
    ms = _windows(lambda: run_steps(trainer, batches, 1, acc), s["steps"] * s["windows"], 1, device)[0]
    (folder / f"{me.name}.json").write_text(json.dumps({"ms_per_step": ms}))
    return 0


def pack(k: int, args: argparse.Namespace, s: dict[str, Any]) -> dict[str, Any]:
    """``k`` trial processes on one device at once: each one's ms/step and the summed steps/s."""
    with tempfile.TemporaryDirectory() as folder:
        base = [sys.executable, "-m", "fixmatch_ray.bench", "gpu", "--packed-worker", folder, "--device", args.device,
                "--pack", str(k), "--pack-model", s["pack_model"], "--steps", str(s["steps"]),
                "--windows", str(s["windows"]), "--warmup", str(s["warmup"]), "--images", str(s["images"])]
        procs = [subprocess.Popen(base + (["--quick"] if args.quick else [])) for _ in range(k)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"a packed trial exited with {codes}")
        ms = [json.loads(f.read_text())["ms_per_step"] for f in Path(folder).glob("*.json")]
    return {"trials": k, "ms_per_step": ms, "steps_per_s": sum(1000 / m for m in ms)}


def model_key(run: RunConfig) -> str:
    """The step-time table's key (as ``launch/plan.py``): ``arch-depth-width``, ``-s``/``-c`` where needed."""
    key = f"{run.arch}-{run.depth}-{run.width}"
    if run.arch == "wideresnet" and run.scales not in (None, 3):
        key += f"-s{run.scales}"
    return key + (f"-c{run.cardinality}" if run.arch == "resnext" else "")


def project(sweep: str, table: dict[str, dict[str, float]], images_per_step: int) -> dict[str, Any]:
    """GPU-hours of a sweep file: Σ trials × total_steps × ms/step (scaled by images per step);
    trials whose model or precision was not measured are counted apart."""
    hours, unknown = 0.0, []
    for t in load_sweep(sweep).trials:
        r = t.run
        amp = "bf16" if r.amp == "auto" else r.amp
        times = table.get(model_key(r), {})
        ms = times.get(f"{amp}+compile" if r.compile else amp, times.get(amp))
        if ms is None:
            unknown.append(t.name)
            continue
        hours += r.total_steps * ms * r.batch_size * (1 + 2 * r.mu) / images_per_step / 3.6e6
    return {"sweep": sweep, "gpu_hours": hours, "not_measured": unknown}


def _print(res: dict[str, Any]) -> None:
    for model, by_prec in res["measured"].items():
        for prec, m in by_prec.items():
            mem = f", peak {m['peak_memory_gib']:.2f} GiB" if m["peak_memory_gib"] is not None else ""
            print(f"  {model:<16} {prec:<13} loop {m['loop_ms']['median']:8.2f} ms/step (min {m['loop_ms']['min']:.2f}); "
                  f"augmentation {m['aug_ms']['median']:.2f} + step {m['step_on_fixed_batch_ms']['median']:.2f}; "
                  f"eval+checkpoint {m['amortised_eval_checkpoint_ms_per_step']:.3f} ms/step amortised{mem}")
    for p in res["packing"]:
        print(f"  {p['trials']} packed trial(s) of {res['settings']['pack_model']}: {p['steps_per_s']:.1f} steps/s in all")
    pr = res["projection"]
    if pr:
        print(f"  {pr['sweep']}: {pr['gpu_hours']:.1f} GPU-hours of training steps"
              + (f" ({len(pr['not_measured'])} trials not measured here)" if pr["not_measured"] else ""))


def main(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed ``args`` (see :func:`add_arguments`); 2 without the device."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: {NO_CUDA}", file=sys.stderr)
        return 2
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if args.packed_worker:
        return packed_worker(args)
    try:
        s = _settings(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"FixMatch step on {card}: batch {s['batch']} + {s['mu'] * s['batch']} x 2, {s['images']} images resident")
    measured = {m: {p: measure(m, p, s, device) for p in s["precisions"]} for m in s["models"]}
    images = s["batch"] * (1 + 2 * s["mu"])
    table = {m: {p: r["loop_ms"]["median"] for p, r in by.items()} for m, by in measured.items()}
    packing = [pack(k, args, s) for k in s["pack"]]
    projection = project(args.sweep, table, images) if args.sweep and Path(args.sweep).is_file() else None
    res = {"card": card, "settings": s, "measured": measured, "packing": packing, "projection": projection}
    _print(res)
    if args.out:
        Path(args.out).write_text(json.dumps({"card": card, "images_per_step": images, "step_ms": table}, indent=1))
    if args.details:
        Path(args.details).write_text(json.dumps(res, indent=1))
    return 0
