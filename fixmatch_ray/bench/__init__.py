"""Benchmarks that print figures (and write JSON): ``python -m fixmatch_ray.bench {aug,ray,gpu}``.

``aug``: CPU seconds of augmentation per FixMatch step (64 weak + 448 weak + 448 strong 32x32
images), the per-image PIL reference against the batched tensor path, side by side in one run.
``gpu`` (:mod:`.gpu`, its own flags): ms/step of WRN-28-2 and WRN-28-8 through the real loop on a
CUDA device, and the ``--step-times`` table of ``sweep --dry-run``. ``costs``: counts FLOPs, bytes
and kernels of every network's step again (:mod:`..perf.counts`) and rewrites the kept file the
plan's estimates read.

``first-run`` (:mod:`.firstrun`): the GPU suite, ``bench gpu``, a short real run and a one-trial sweep
on a new GPU, each stage bounded in time, with a summary.

``ray``: Ray Train's start-up cost and its cost per ``ray.train.report`` (each eval epoch),
measured as the difference between a plain in-process run and the same run through a
1-worker TorchTrainer, then projected onto a paper-length run (2^20 steps, a report every 1024);
and what a report with a checkpoint of a WRN-28-2- or WRN-28-8-sized state stalls training,
synchronous against asynchronous upload (:mod:`.report`), with its paper-length share.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import RunConfig
from .report_cost import PAPER_EVAL, PAPER_STEPS, STATE_MB, measure_reports, paper_share


def _local_seconds(cfg: RunConfig) -> float:
    from ..training.loop import run_local

    tic = time.perf_counter()
    run_local(cfg, progress=False)
    return time.perf_counter() - tic


def _ray_seconds(cfg: RunConfig, storage: str, name: str) -> float:
    from ..launch.worker import Resources, build_trainer

    tic = time.perf_counter()
    build_trainer(cfg, Resources(workers=1), storage, name, max_failures=0).fit()
    return time.perf_counter() - tic


def bench_ray(steps: int = 40, repeats: int = 1) -> dict[str, Any]:
    """Start-up and per-report overhead of Ray Train on this machine (tiny net on digits)."""
    from ..launch.cluster import HEALTH_CHECK_ENV, ensure_ray, job_env

    tic = time.perf_counter()
    ensure_ray(min_cpus=2)
    init_s = time.perf_counter() - tic
    base = RunConfig(dataset="digits", num_labeled=20, batch_size=8, mu=2, total_steps=steps, depth=10,
                     width=1, num_workers=0, seed=0)
    few, many = base.replace(eval_step=steps), base.replace(eval_step=2)
    n_many = steps // 2
    out: dict[str, list[float]] = {k: [] for k in ("local_few", "local_many", "ray_few", "ray_many")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            out["local_few"].append(_local_seconds(few.replace(out=f"{tmp}/lf{r}")))
            out["local_many"].append(_local_seconds(many.replace(out=f"{tmp}/lm{r}")))
            out["ray_few"].append(_ray_seconds(few, tmp, f"rf{r}"))
            out["ray_many"].append(_ray_seconds(many, tmp, f"rm{r}"))
        checkpoints = measure_reports(tmp, STATE_MB)
    med = {k: sorted(v)[len(v) // 2] for k, v in out.items()}
    startup = med["ray_few"] - med["local_few"]  # one report each: the rest is start-up
    per_report = ((med["ray_many"] - med["local_many"]) - startup) / (n_many - 1)
    reports = PAPER_STEPS // PAPER_EVAL
    projection = {}
    for label, step_s in (("h100_wrn28_2_6ms", 0.006), ("h100_wrn28_8_30ms", 0.030),
                          ("pil_capped_25_steps_per_s", 0.04)):
        run_s = PAPER_STEPS * step_s
        projection[label] = 100 * (startup + reports * per_report) / (run_s + startup + reports * per_report)
    share = {f"{name}_{mode}": paper_share(checkpoints[f"{name}_{mode}_s"], 0.006)
             for name in STATE_MB for mode in ("sync", "async")}
    return {"health_check_interval_s": float(job_env()[HEALTH_CHECK_ENV]), "ray_init_s": init_s,
            "train_startup_s": startup, "per_report_s": per_report, "timings_s": med,
            "paper_overhead_percent": projection, "checkpoint_reports": checkpoints,
            "checkpoint_paper_share_percent_wrn28_2_6ms": share}


def print_checkpoint_costs(res: dict[str, Any]) -> None:
    """The checkpoint part of ``bench ray``: per-report stall, sync vs async, and the paper share."""
    c = res["checkpoint_reports"]
    print(f"per report with a checkpoint, stall of the training loop (1 worker, local storage, "
          f"{c['reports']} reports {c['gap_s']:.1f} s of work apart; metrics only: {c['no_checkpoint_s']:.3f} s):")
    for name, mb in STATE_MB.items():
        print(f"  {name}-sized state ({mb} MB): sync {c[f'{name}_sync_s']:.3f} s   async {c[f'{name}_async_s']:.3f} s"
              f"   (async uploads drained {c[f'{name}_async_drain_s']:.2f} s after the last report)")
    print(f"paper-length share ({PAPER_STEPS} steps at 6 ms/step (WRN-28-2), a checkpoint every "
          f"{PAPER_EVAL} steps):")
    for key, pct in res["checkpoint_paper_share_percent_wrn28_2_6ms"].items():
        print(f"  {key:<16} {pct:.2f} % of wall time")


B, MU, SIZE = 64, 7, 32


def _cifar_like(n: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def bench_aug(steps: int = 3, repeats: int = 5) -> dict[str, Any]:
    """CPU seconds per step of the PIL path and the batched path, both on one thread (PIL is
    single-threaded per image; idle OpenMP threads would otherwise count spinning as work).

    The two are timed alternately, ``repeats`` times, and each reports its median: a shared
    machine's noise then falls on both sides alike. The caller's thread count is restored.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _time_aug(steps, repeats)
    finally:
        torch.set_num_threads(threads)


def _time_aug(steps: int, repeats: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    from ..data.batched import BatchAugmenter
    from ..data.datasets import DATASETS
    from ..data.policies.randaugment import ViewTransform

    spec = DATASETS["cifar10"]
    imgs = _cifar_like(B + MU * B)
    pil = ViewTransform(spec.mean, spec.std, flip=True)
    aug, gen = BatchAugmenter(spec.mean, spec.std, flip=True), torch.Generator().manual_seed(0)
    store = aug.store(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous())  # resident, built once per run
    lb, ulb = torch.arange(B), torch.arange(B, B + MU * B)

    def pil_step(s: int) -> None:
        for i in range(B):
            pil.labeled(Image.fromarray(imgs[i]), np.random.default_rng([s, 0, i]))
        for i in range(B, B + MU * B):
            pil.unlabeled(Image.fromarray(imgs[i]), np.random.default_rng([s, 1, i]))

    def batched_step(s: int) -> None:
        aug.weak(store, lb, gen), aug.weak(store, ulb, gen), aug.strong(store, ulb, gen)

    def cpu_seconds(step, n: int) -> float:
        tic = time.process_time()
        for s in range(n):
            step(s)
        return (time.process_time() - tic) / n

    batched_step(0)  # warm-up: builds the op tables
    pil_s, batch_s = [], []
    for _ in range(repeats):
        pil_s.append(cpu_seconds(pil_step, steps))
        batch_s.append(cpu_seconds(batched_step, steps * 10))
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return {"images_per_step": B + 2 * MU * B, "pil_cpu_s_per_step": med(pil_s), "batched_cpu_s_per_step": med(batch_s),
            "ratio": med(pil_s) / med(batch_s), "torch_threads": torch.get_num_threads(),
            "pil_runs_s": pil_s, "batched_runs_s": batch_s}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["costs"]:  # the plan's kept counts (perf/counts.json), made again
        from ..perf.counts import COUNTS_FILE, count_all

        COUNTS_FILE.write_text(json.dumps(count_all(), indent=0) + "\n", encoding="utf-8")
        print(f"wrote {COUNTS_FILE.name}: FLOPs, bytes and kernels per step of every model x precision x policy")
        return 0
    if argv[:1] == ["first-run"]:  # its own flags: see bench/firstrun.py
        from .firstrun import main as first_run

        return first_run(argv[1:])
    if argv[:1] == ["gpu"]:  # its own flags: see bench/gpu.py
        from . import gpu

        g = argparse.ArgumentParser(prog="python -m fixmatch_ray.bench gpu", description=gpu.__doc__.split("\n")[0])
        gpu.add_arguments(g)
        return gpu.main(g.parse_args(argv[1:]))
    p = argparse.ArgumentParser(prog="python -m fixmatch_ray.bench")
    p.add_argument("what", choices=["aug", "ray", "gpu", "first-run", "costs"],
                   help="which benchmark (gpu, first-run: see their --help)")
    p.add_argument("--json", default="bench_results.json", help="where to write the figures")
    p.add_argument("--repeats", type=int, default=1, help="ray: runs per figure; aug: alternating runs (at least 5)")
    args = p.parse_args(argv)
    if args.what == "aug":
        res = bench_aug(repeats=max(args.repeats, 5))
        print(f"augmentation per step ({res['images_per_step']} images, 32x32), CPU seconds, median of "
              f"{len(res['pil_runs_s'])} alternating runs [{res['torch_threads']} torch threads]:")
        print(f"  PIL per image:   {res['pil_cpu_s_per_step']:.3f} s")
        print(f"  batched tensors: {res['batched_cpu_s_per_step']:.4f} s")
        print(f"  ratio:           {res['ratio']:.1f}x less CPU time")
        Path(args.json).write_text(json.dumps({"aug": res}, indent=1))
        return 0
    from ..errors import UserError

    try:
        res = bench_ray(repeats=args.repeats)
    except UserError as e:  # e.g. a dead cluster recorded on this machine: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"controller poll interval (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S): {res['health_check_interval_s']} s")
    print(f"ray.init (local, this machine):      {res['ray_init_s']:.1f} s")
    print(f"Train run start-up (1 worker):       {res['train_startup_s']:.1f} s")
    print(f"per ray.train.report + checkpoint:   {res['per_report_s']:.2f} s")
    for label, pct in res["paper_overhead_percent"].items():
        print(f"paper-length share ({label}): {pct:.2f} % of wall time")
    print_checkpoint_costs(res)
    Path(args.json).write_text(json.dumps({"ray": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
