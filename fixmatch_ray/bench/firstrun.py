"""``python -m fixmatch_ray.bench first-run --out DIR``: the first hour on a new GPU, in one command.

Stages, each its own process with a time limit (a stage past its limit gets SIGINT, then SIGKILL 15 s
later, and the next one starts), the limits summing to under 8 minutes on one GPU:

1. ``gpu-suite``: ``pytest -m gpu`` on ``tests/test_gpu.py`` and ``tests/test_gpu_ray.py`` (a JUnit XML);
2. ``bench-eager``, ``bench-compiled``, ``bench-eager-augmentation``: ``bench gpu`` for RandAugment
   and CTAugment, fp32 (TF32) and bf16, eager and compiled, and once with the augmentation op by op
   instead of a CUDA graph; their step times merged into one ``--step-times`` file;
3. ``short-run``: WRN-28-2 on scikit-learn's digits at 32 x 32 x 3 (written in CIFAR-10's layout:
   no download) through the device path, a few thousand steps, its accuracy;
4. ``sweep``: a one-trial Ray sweep of the same on the GPU;
5. ``plans``: ``sweep --dry-run`` of ``sweeps/paper.yaml`` and ``sweeps/table2.yaml`` with the
   measured step times.

DIR gets ``summary.md``, ``step_times.json``, ``junit.xml``, ``logs/<stage>.log`` and each stage's
own files. Without CUDA: one line, exit 2. ``--device cpu --quick`` runs every stage tiny on the
CPU, to check the command itself.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tests/ and sweeps/ beside the package
NO_CUDA = ("first-run needs a CUDA device; none is visible (--device cpu --quick runs every stage tiny on the "
           "CPU, to check the command)")
GRACE_S = 15  # after SIGINT, before SIGKILL


@dataclass
class Stage:
    name: str
    cmd: list[str]
    limit_s: float
    needs: tuple[str, ...] = ()  # paths under ROOT it runs from (a checkout's tests/, sweeps/)
    result: dict[str, Any] = field(default_factory=dict)


def run_stage(stage: Stage, logs: Path) -> dict[str, Any]:
    """Run one stage to its end or its limit; its status, seconds, exit code and log."""
    log = logs / f"{stage.name}.log"
    missing = [n for n in stage.needs if not (ROOT / n).exists()]
    if missing:
        return {"status": "skipped", "why": f"no {', '.join(missing)} here (run from a checkout)", "seconds": 0.0,
                "limit_s": stage.limit_s, "log": None}
    tic = time.monotonic()
    with log.open("w") as out:
        out.write("$ " + " ".join(stage.cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(stage.cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        status = "passed"
        try:
            rc = proc.wait(timeout=stage.limit_s)
        except subprocess.TimeoutExpired:
            status = "timed out"
            os.killpg(proc.pid, signal.SIGINT)  # pytest still writes its XML; bench has written its file
            try:
                rc = proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        if status == "passed" and rc != 0:
            status = "failed"
    result = {"status": status, "rc": rc, "seconds": time.monotonic() - tic, "limit_s": stage.limit_s,
              "log": str(log.relative_to(logs.parent))}
    if stage.name == "gpu-suite" and rc == NO_TESTS_RAN:
        result.update(status="skipped", why="pytest ran no test: every one skipped (no CUDA device)")
    return result


NO_TESTS_RAN = 5  # pytest's exit code when nothing ran


def digits_as_cifar10(root: Path) -> Path:
    """scikit-learn's digits at 32 x 32 x 3 (bilinear from the 16 x 16 the project trains on), in
    CIFAR-10's on-disk layout under ``root``: the short run's and the sweep's data, no download."""
    import numpy as np
    from PIL import Image

    from ..data.datasets import load_dataset

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def rows(split: str) -> dict:
        d = load_dataset("digits", str(root), split, download=False)
        big = np.stack([np.asarray(Image.fromarray(a).resize((32, 32), Image.BILINEAR)) for a in d.images])
        return {"data": big.transpose(0, 3, 1, 2).reshape(len(big), -1), "labels": d.targets.tolist()}

    train = rows("train")
    for i, part in enumerate(np.array_split(np.arange(len(train["labels"])), 5), 1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": train["data"][part], "labels": [train["labels"][j] for j in part]}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(rows("test"), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(c) for c in range(10)]}, f)
    return root


def _run_shape(quick: bool) -> dict[str, Any]:
    """The short run's (and the sweep's) network and step."""
    if quick:
        return {"depth": 10, "width": 1, "batch_size": 8, "mu": 2, "total_steps": 20, "eval_step": 10}
    return {"depth": 28, "width": 2, "batch_size": 64, "mu": 7, "total_steps": 3000, "eval_step": 500}


def sweep_file(out: Path, data: Path, quick: bool, gpu: bool) -> Path:
    """A one-trial sweep of the short run's shape (fewer steps) on one GPU (none with ``--quick`` on the CPU)."""
    import yaml

    shape = {**_run_shape(quick), "total_steps": 4 if quick else 400, "eval_step": 2 if quick else 200}
    doc = {"name": "first-run", "storage": str(out / "sweep"),
           "base": {"dataset": "cifar10", "data_dir": str(data), "download": False, "aug_backend": "tensor",
                    "num_workers": 0, **shape},
           "grid": [{"num_labeled": [250]}], "seeds": [1],
           "resources": {"workers": 1, "gpus_per_worker": 1 if gpu else 0, "cpus_per_worker": 1}}
    path = out / "first-run.yaml"  # the generated sweep file beside its experiment
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def stages(out: Path, device: str, quick: bool, data: Path) -> list[Stage]:
    """The stages, in order, with their limits (GPU: 450 s in all, plus at most 15 s of grace each)."""
    py, bench = sys.executable, [sys.executable, "-m", "fixmatch_ray.bench", "gpu", "--device", device]
    (out / "bench").mkdir(exist_ok=True)
    size = (["--quick", "--steps", "1", "--windows", "1", "--warmup", "1"] if quick
            else ["--steps", "20", "--windows", "3", "--warmup", "10"])
    models = [] if quick else ["--models", "wideresnet-28-2,wideresnet-28-8"]
    one = [] if quick else ["--models", "wideresnet-28-2"]
    slow = 4 if quick else 1  # the CPU self-check: a small, shared machine
    run = [f"--{k.replace('_', '-')}={v}" for k, v in _run_shape(quick).items()]
    return [
        Stage("gpu-suite", [py, "-m", "pytest", "-m", "gpu", "-rs", "-p", "no:cacheprovider", "-o", "addopts=",
                            f"--junitxml={out / 'junit.xml'}", "tests/test_gpu.py", "tests/test_gpu_ray.py"],
              140 * slow, needs=("tests",)),
        Stage("bench-eager", bench + size + models + ["--precisions", "off,bf16", "--pack", "1" if quick else "1,2",
                                                      "--sweep", "", "--out", str(out / "bench" / "eager.json"),
                                                      "--details", str(out / "bench" / "eager_details.json")],
              70 * slow),
        Stage("bench-compiled", bench + size + one + ["--precisions", "off+compile" if quick else
                                                      "off+compile,bf16+compile", "--pack", "0", "--sweep", "",
                                                      "--out", str(out / "bench" / "compiled.json"),
                                                      "--details", str(out / "bench" / "compiled_details.json")],
              60 * slow * (3 if quick else 1)),  # inductor's C++ build is minutes on a small CPU
        Stage("bench-eager-augmentation", bench + size + one + ["--precisions", "off", "--no-cuda-graphs", "--pack",
                                                                "0", "--sweep", "", "--details",
                                                                str(out / "bench" / "eager_augmentation.json")],
              20 * slow * (3 if quick else 1)),
        Stage("short-run", [py, "-m", "fixmatch_ray.train", "--dataset", "cifar10", "--data-dir", str(data),
                            "--no-download", "--num-labeled", "250", *run, "--seed", "1", "--aug-backend", "tensor",
                            "--num-workers", "0", "--device", device, "--no-progress", "--out",
                            str(out / "short-run")], 60 * slow),
        Stage("sweep", [py, "-m", "fixmatch_ray.sweep", str(sweep_file(out, data, quick, device != "cpu"))],
              70 * slow),
        Stage("plans", [py, "-c", PLANS, str(out / "step_times.json")], 30 * slow, needs=("sweeps",)),
    ]


# the last stage: both sweep plans with the measured step times, in one process
PLANS = ("import sys; from fixmatch_ray.sweep import main; "
         "codes = [main([f, '--dry-run', '--step-times', sys.argv[1]]) for f in ('sweeps/paper.yaml', "
         "'sweeps/table2.yaml')]; sys.exit(max(codes))")


def merge_step_times(out: Path) -> Path | None:
    """The eager and compiled benches' files as one ``--step-times`` file (None when neither wrote one)."""
    docs = [json.loads(p.read_text()) for p in (out / "bench" / "eager.json", out / "bench" / "compiled.json")
            if p.is_file()]
    if not docs:
        return None
    merged = {**docs[0], "step_ms": {}, "notes": []}
    for doc in docs:
        for policy, models in doc["step_ms"].items():
            for model, times in models.items():
                merged["step_ms"].setdefault(policy, {}).setdefault(model, {}).update(times)
        merged["notes"] += doc.get("notes", [])
    path = out / "step_times.json"
    path.write_text(json.dumps(merged, indent=1))
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fixmatch_ray.bench first-run", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="directory for summary.md, step_times.json, junit.xml, logs/")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --quick: the command's self-check)")
    p.add_argument("--quick", action="store_true", help="every stage tiny (WRN-10-1, a few steps)")
    p.add_argument("--stages", help=f"comma-separated, some of {', '.join(STAGES)} (default all, in that order)")
    return p


STAGES = ("gpu-suite", "bench-eager", "bench-compiled", "bench-eager-augmentation", "short-run", "sweep", "plans")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: {NO_CUDA}", file=sys.stderr)
        return 2
    if args.device == "cpu" and not args.quick:
        print("error: --device cpu runs with --quick only (the full stages are sized for a GPU)", file=sys.stderr)
        return 2
    chosen = args.stages.split(",") if args.stages else list(STAGES)
    unknown = [n for n in chosen if n not in STAGES]
    if unknown:
        print(f"error: --stages: unknown {', '.join(unknown)}; expected some of {', '.join(STAGES)}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    data = digits_as_cifar10(out / "data")
    from .firstrun_summary import write_summary

    results: dict[str, dict[str, Any]] = {}
    for stage in stages(out, args.device, args.quick, data):
        if stage.name not in chosen:
            continue
        if stage.name == "plans" and merge_step_times(out) is None:
            results[stage.name] = {"status": "skipped", "why": "no step times were measured", "seconds": 0.0,
                                   "limit_s": stage.limit_s, "log": None}
            continue
        print(f"[first-run] {stage.name} (limit {stage.limit_s:.0f} s) ...", flush=True)
        results[stage.name] = run_stage(stage, out / "logs")
        r = results[stage.name]
        print(f"[first-run] {stage.name}: {r['status']} in {r['seconds']:.0f} s ({r.get('log') or r.get('why')})",
              flush=True)
        write_summary(out, results, args.device)  # after every stage: a killed run still leaves its summary
    merge_step_times(out)
    path = write_summary(out, results, args.device)
    print(f"[first-run] summary: {path}", flush=True)
    return 0 if all(r["status"] in ("passed", "skipped") for r in results.values()) else 1
