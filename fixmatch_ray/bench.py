"""Benchmarks that print figures (and write JSON): ``python -m fixmatch_ray.bench ray``.

``ray``: Ray Train's start-up cost and its cost per ``ray.train.report`` (each eval epoch),
measured as the difference between a plain in-process run and the same run through a
1-worker TorchTrainer, then projected onto a paper-length run (2^20 steps, a report every 1024).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import RunConfig

PAPER_STEPS, PAPER_EVAL = 2**20, 1024


def _local_seconds(cfg: RunConfig) -> float:
    from .runner import run_local

    tic = time.perf_counter()
    run_local(cfg, progress=False)
    return time.perf_counter() - tic


def _ray_seconds(cfg: RunConfig, storage: str, name: str) -> float:
    from .worker import Resources, build_trainer

    tic = time.perf_counter()
    build_trainer(cfg, Resources(workers=1), storage, name, max_failures=0).fit()
    return time.perf_counter() - tic


def bench_ray(steps: int = 40, repeats: int = 1) -> dict[str, Any]:
    """Start-up and per-report overhead of Ray Train on this machine (tiny net on digits)."""
    from .worker import HEALTH_CHECK_ENV, ensure_ray, job_env

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
    med = {k: sorted(v)[len(v) // 2] for k, v in out.items()}
    startup = med["ray_few"] - med["local_few"]  # one report each: the rest is start-up
    per_report = ((med["ray_many"] - med["local_many"]) - startup) / (n_many - 1)
    reports = PAPER_STEPS // PAPER_EVAL
    projection = {}
    for label, step_s in (("h100_wrn28_2_6ms", 0.006), ("h100_wrn28_8_30ms", 0.030),
                          ("pil_capped_25_steps_per_s", 0.04)):
        run_s = PAPER_STEPS * step_s
        projection[label] = 100 * (startup + reports * per_report) / (run_s + startup + reports * per_report)
    return {"health_check_interval_s": float(job_env()[HEALTH_CHECK_ENV]), "ray_init_s": init_s, "train_startup_s": startup, "per_report_s": per_report,
            "timings_s": med, "paper_overhead_percent": projection}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fixmatch_ray.bench")
    p.add_argument("what", choices=["ray"], help="which benchmark")
    p.add_argument("--json", default="bench_results.json", help="where to write the figures")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    res = bench_ray(repeats=args.repeats)
    print(f"controller poll interval (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S): {res['health_check_interval_s']} s")
    print(f"ray.init (local, this machine):      {res['ray_init_s']:.1f} s")
    print(f"Train run start-up (1 worker):       {res['train_startup_s']:.1f} s")
    print(f"per ray.train.report + checkpoint:   {res['per_report_s']:.2f} s")
    for label, pct in res["paper_overhead_percent"].items():
        print(f"paper-length share ({label}): {pct:.2f} % of wall time")
    Path(args.json).write_text(json.dumps({"ray": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
