"""``python -m fixmatch_ray.bench gpu``: what a FixMatch step costs on this GPU, and what a sweep would.

Per policy (RandAugment, CTAugment), model (WRN-28-2 on CIFAR-10's shape, WRN-28-8 on CIFAR-100's)
and precision (``off``: fp32 with TF32, ``bf16``, each eager and ``+compile``; ``ieee`` and ``fp16``
on request): ms per step through the real per-step path of a run
(:func:`.training.engine.run_steps`: the sampler's device tables, :class:`DeviceBatches`'
augmentation, replayed as a CUDA graph unless ``--no-cuda-graphs``, the step, EMA and the loop's
bookkeeping), in repeated windows (min and median); the augmentation alone and the step alone on a
fixed batch (the split); one evaluation and one checkpoint (amortised over ``eval_step`` steps,
reported apart); peak memory. Then the step rate of 1, 2, 4 trials packed on one GPU (separate
processes, timed together) and the projected GPU-hours of a sweep file, by the sweep plan's own
projection. The images are synthetic (uint8 noise of the dataset's shape): the cost does not
depend on their content, and nothing is downloaded.

``--out FILE`` writes the ``--step-times`` table of ``sweep --dry-run`` ({"card", "card_memory_gib",
"images_per_step", "step_ms": {policy: {model: {precision: median ms}}}, "notes"}), training steps
only, as that plan counts them, after every measurement: a stage that fails (out of memory, a
compile error) is noted and the others go on, and what was measured before is kept. ``--details
FILE`` everything measured. ``--device cpu --quick`` runs the same code tiny on the CPU.
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
PRECISIONS = ("off", "ieee", "bf16", "fp16")
POLICIES = ("randaugment", "ctaugment")
PAPER_EVAL_STEP = 1024  # steps per evaluation (and checkpoint) in the paper's runs
NO_CUDA = "bench gpu needs a CUDA device; none is visible (try --device cpu --quick to check the code path)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny: WRN-10-1, batch 8, mu 2, 256 images, few steps")
    p.add_argument("--models", help=f"comma-separated, of {', '.join(MODELS)} (default the first two)")
    p.add_argument("--policies", help=f"comma-separated, of {', '.join(POLICIES)} (default both)")
    p.add_argument("--precisions", help="comma-separated: off (fp32, TF32), ieee (fp32, no TF32), bf16, fp16, each "
                   "optionally +compile (default off,bf16,off+compile,bf16+compile)")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="augment eagerly, op by op (default: each step's augmentation replayed as a CUDA graph)")
    p.add_argument("--steps", type=int, help="steps per timed window (default 50; quick 2)")
    p.add_argument("--windows", type=int, help="timed windows per figure (default 5; quick 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 20; quick 1)")
    p.add_argument("--images", type=int, help="training images resident on the device (default 50000; quick 256)")
    p.add_argument("--pack", help="trial counts to pack on one GPU, comma-separated (default 1,2,4; quick 1; "
                   "0: none)")
    p.add_argument("--pack-model", default=None, help="model/precision packed, e.g. wideresnet-28-2:bf16 "
                   "(default the first model at bf16; quick: at off)")
    p.add_argument("--sweep", default="sweeps/paper.yaml", help="sweep file whose GPU-hours are projected")
    p.add_argument("--out", help="write the --step-times JSON of `sweep --dry-run` here (after every measurement)")
    p.add_argument("--details", help="write every figure (windows, split, memory, packing, projection) here")
    p.add_argument("--packed-worker", help=argparse.SUPPRESS)  # internal: one packed trial's process


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    q = args.quick
    pick = lambda v, full, quick: v if v is not None else (quick if q else full)  # noqa: E731
    models = (args.models or ("wideresnet-10-1" if q else "wideresnet-28-2,wideresnet-28-8")).split(",")
    precs = (args.precisions or ("off,bf16" if q else "off,bf16,off+compile,bf16+compile")).split(",")
    policies = (args.policies or ",".join(POLICIES)).split(",")
    for m in models:
        if m not in MODELS:
            raise ConfigError(f"--models: unknown {m!r}; expected some of {', '.join(MODELS)}")
    for pr in precs:
        if pr.removesuffix("+compile") not in PRECISIONS:
            raise ConfigError(f"--precisions: unknown {pr!r}; expected off, ieee, bf16 or fp16, optionally +compile")
    for pol in policies:
        if pol not in POLICIES:
            raise ConfigError(f"--policies: unknown {pol!r}; expected some of {', '.join(POLICIES)}")
    pack = [int(k) for k in (args.pack or ("1" if q else "1,2,4")).split(",") if int(k) > 0]
    return {"models": models, "precisions": precs, "policies": policies, "steps": pick(args.steps, 50, 2),
            "windows": pick(args.windows, 5, 2), "warmup": pick(args.warmup, 20, 1),
            "images": pick(args.images, 50_000, 256), "batch": 8 if q else 64, "mu": 2 if q else 7,
            "pack": pack, "pack_model": args.pack_model or f"{models[0]}:{'off' if q else 'bf16'}",
            "cuda_graphs": getattr(args, "cuda_graphs", True)}


def run_config(model: str, precision: str, s: dict[str, Any], policy: str = "randaugment") -> RunConfig:
    ds, depth, width = MODELS[model]
    amp = precision.removesuffix("+compile")
    return RunConfig(dataset=ds, num_labeled=400 if ds == "cifar100" else 40, depth=depth, width=width, seed=0,
                     batch_size=s["batch"], mu=s["mu"], total_steps=10**7, amp="off" if amp == "ieee" else amp,
                     tf32=amp != "ieee", compile=precision.endswith("+compile"), aug_backend="tensor",
                     num_workers=0, policy=policy, cuda_graphs=s["cuda_graphs"])


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


def _trainer(cfg: RunConfig, s: dict[str, Any], device: torch.device):
    """A trial's trainer and batches on synthetic data (a learning policy's state on the device)."""
    from ..data.policies import build_policy
    from ..training.engine import Engine
    from ..training.loop import step_batches

    data = synthetic_data(cfg, s["images"])
    policy = build_policy(cfg.policy, device)
    trainer = Engine(cfg, device, num_unlabeled=len(data.train), policy=policy)
    return trainer, step_batches(cfg, data, 0, device=device, policy=policy), data


def measure(model: str, precision: str, s: dict[str, Any], device: torch.device,
            policy: str = "randaugment") -> dict[str, Any]:
    """One model at one precision with one policy: the loop, the split, evaluation, checkpoint, peak memory."""
    from ..data.batched import EvalImages
    from ..training.checkpoint import save_checkpoint
    from ..training.engine import StepSums, run_steps

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    trainer, batches, data = _trainer(run_config(model, precision, s, policy), s, device)
    acc = StepSums(device)
    run_steps(trainer, batches, s["warmup"], acc)  # cuDNN autotuning, compilation, lazy tables, graph capture
    loop = _windows(lambda: run_steps(trainer, batches, 1, acc), s["steps"], s["windows"], device)
    aug = _windows(lambda: next(batches), s["steps"], s["windows"], device)
    fixed = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in next(batches).items()}
    model_ms = _windows(lambda: trainer.train_step(fixed), s["steps"], s["windows"], device)
    test = EvalImages(data.test, data.spec, device)
    eval_ms = _windows(lambda: (trainer.evaluate(test), trainer.evaluate(test, use_ema=False)), 1, 2, device)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_ms = _windows(lambda: save_checkpoint(tmp, trainer.state_dict()), 1, 2, device)
    per_eval = min(eval_ms) + min(ckpt_ms)  # an eval epoch ends with both evaluations and a checkpoint
    return {"loop_ms": _summary(loop), "aug_ms": _summary(aug), "step_on_fixed_batch_ms": _summary(model_ms),
            "eval_ms": min(eval_ms), "checkpoint_ms": min(ckpt_ms), "precision": trainer.precision,
            "cuda_graphs": bool(getattr(batches, "graphed", False)),
            "amortised_eval_checkpoint_ms_per_step": per_eval / PAPER_EVAL_STEP,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def packed_worker(args: argparse.Namespace) -> int:
    """One of k packed trials: warm up, wait for the others (a ready file each), time, write ms/step."""
    from ..training.engine import StepSums, run_steps

    s, device = _settings(args), torch.device(args.device)
    model, precision = s["pack_model"].split(":")
    folder, k = Path(args.packed_worker), s["pack"][0]
    trainer, batches, _ = _trainer(run_config(model, precision, s), s, device)
    acc = StepSums(device)
    run_steps(trainer, batches, s["warmup"], acc)
    _sync(device)
    me = folder / f"ready-{os.getpid()}"
    me.touch()
    deadline = time.time() + PACK_WAIT_S
    while len(list(folder.glob("ready-*"))) < k and time.time() < deadline:
        time.sleep(0.01)
    ms = _windows(lambda: run_steps(trainer, batches, 1, acc), s["steps"] * s["windows"], 1, device)[0]
    (folder / f"{me.name}.json").write_text(json.dumps({"ms_per_step": ms}))
    return 0


PACK_WAIT_S = 300  # a packed trial waits this long for the others to be ready


def pack(k: int, args: argparse.Namespace, s: dict[str, Any]) -> dict[str, Any]:
    """``k`` trial processes on one device at once: each one's ms/step and the summed steps/s. A
    process that fails stops the others (they would wait for it), and that is a RuntimeError."""
    with tempfile.TemporaryDirectory() as folder:
        base = [sys.executable, "-m", "fixmatch_ray.bench", "gpu", "--packed-worker", folder, "--device", args.device,
                "--pack", str(k), "--pack-model", s["pack_model"], "--steps", str(s["steps"]),
                "--windows", str(s["windows"]), "--warmup", str(s["warmup"]), "--images", str(s["images"])]
        base += ["--quick"] * bool(args.quick) + ["--no-cuda-graphs"] * (not s["cuda_graphs"])
        logs = [Path(folder) / f"stderr-{i}.txt" for i in range(k)]
        procs = [subprocess.Popen(base, stderr=log.open("w")) for log in logs]
        while any(p.poll() is None for p in procs) and not any(p.poll() for p in procs):
            time.sleep(0.2)
        for p in procs:
            if p.poll() is None:
                p.kill()
        codes = [p.wait() for p in procs]
        if any(codes):
            failed = next(log for log, p in zip(logs, procs) if p.returncode)
            why = (failed.read_text(errors="replace").strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"a packed trial exited with {codes}: {why}")
        ms = [json.loads(f.read_text())["ms_per_step"] for f in Path(folder).glob("*.json")]
    return {"trials": k, "ms_per_step": ms, "steps_per_s": sum(1000 / m for m in ms)}


def _print_measure(policy: str, model: str, prec: str, m: dict[str, Any]) -> None:
    mem = f", peak {m['peak_memory_gib']:.2f} GiB" if m["peak_memory_gib"] is not None else ""
    print(f"  {policy:<11} {model:<16} {prec:<13} loop {m['loop_ms']['median']:8.2f} ms/step "
          f"(min {m['loop_ms']['min']:.2f}); augmentation {m['aug_ms']['median']:.2f}"
          f"{' (graph)' if m['cuda_graphs'] else ''} + step {m['step_on_fixed_batch_ms']['median']:.2f}; "
          f"eval+checkpoint {m['amortised_eval_checkpoint_ms_per_step']:.3f} ms/step amortised{mem}", flush=True)


def project(sweep: str, table: dict[str, Any]):
    """The sweep plan's own GPU-hours of ``sweep`` with the measured ``table`` (the --step-times
    document): the plan's lines, its total, and how many trials it had to estimate."""
    from ..launch.plan import format_plan, make_plan
    from ..perf.steptimes import StepTimes

    times = StepTimes(table["step_ms"], table["card"], table["images_per_step"], True, table.get("card_memory_gib"))
    spec = load_sweep(sweep)
    plan = make_plan(spec, spec.max_concurrent_trials or 1, times)  # no cluster: the file's own request
    estimated = sum(count for _, count, _, src in plan.rows if not src.startswith("measured"))
    return {"sweep": sweep, "gpu_hours": plan.gpu_hours, "estimated_trials": estimated, "plan": format_plan(plan)}


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return text[0][:300] if text else type(e).__name__


class Results:
    """What the run has measured so far, written to ``--out`` / ``--details`` after every stage."""

    def __init__(self, args: argparse.Namespace, s: dict[str, Any], card: str, memory: float | None):
        self.args, self.s = args, s
        self.table = {"card": card, "card_memory_gib": memory, "images_per_step": s["batch"] * (1 + 2 * s["mu"]),
                      "step_ms": {}, "notes": []}
        self.details = {"card": card, "settings": s, "measured": {}, "packing": [], "projection": None}

    def note(self, what: str, e: BaseException) -> None:
        line = f"{what}: failed ({_one_line(e)})"
        self.table["notes"].append(line)
        print(f"  {line}", file=sys.stderr, flush=True)

    def add(self, policy: str, model: str, prec: str, m: dict[str, Any]) -> None:
        self.details["measured"].setdefault(policy, {}).setdefault(model, {})[prec] = m
        self.table["step_ms"].setdefault(policy, {}).setdefault(model, {})[prec] = m["loop_ms"]["median"]

    def write(self) -> None:
        from ..storage import atomic_write_bytes

        self.details["notes"] = self.table["notes"]
        if self.args.out and self.table["step_ms"]:
            atomic_write_bytes(Path(self.args.out), json.dumps(self.table, indent=1).encode())
        if self.args.details:
            atomic_write_bytes(Path(self.args.details), json.dumps(self.details, indent=1).encode())


def _stages(res: Results, args: argparse.Namespace, s: dict[str, Any], device: torch.device) -> None:
    for policy in s["policies"]:
        for model in s["models"]:
            for prec in s["precisions"]:
                try:
                    m = measure(model, prec, s, device, policy)
                except Exception as e:  # out of memory, a compile failure: noted, the rest goes on
                    res.note(f"{policy} {model} {prec}", e)
                else:
                    res.add(policy, model, prec, m)
                    _print_measure(policy, model, prec, m)
                res.write()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the packed processes need the memory this one's allocator keeps
    for k in s["pack"]:
        try:
            p = pack(k, args, s)
        except Exception as e:
            res.note(f"{k} packed trial(s) of {s['pack_model']}", e)
            break  # more trials will not fit better
        res.details["packing"].append(p)
        print(f"  {k} packed trial(s) of {s['pack_model']}: {p['steps_per_s']:.1f} steps/s in all", flush=True)
        res.write()


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
    memory = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None
    print(f"FixMatch step on {card}: batch {s['batch']} + {s['mu'] * s['batch']} x 2, {s['images']} images resident",
          flush=True)
    res = Results(args, s, card, memory)
    _stages(res, args, s, device)
    if args.sweep and Path(args.sweep).is_file() and res.table["step_ms"]:
        try:
            pr = project(args.sweep, res.table)
        except ConfigError as e:  # e.g. a trial that does not fit this card's memory
            res.note(f"projection of {args.sweep}", e)
        else:
            res.details["projection"] = pr
            total = "unknown" if pr["gpu_hours"] is None else f"{pr['gpu_hours']:,.1f}"
            print(f"  {pr['sweep']}: {total} GPU-hours of training steps by the sweep plan"
                  + (f" ({pr['estimated_trials']} trials estimated, not measured here)" if pr["estimated_trials"] else ""))
    res.write()
    return 0 if res.table["step_ms"] else 1
