"""``summary.md`` of ``bench first-run``: the card, each stage, the GPU suite's counts, ms/step per
model x precision x policy with peak memory, eager against graphed augmentation, the short run's
accuracy, the sweep, and the plans' GPU-hours with the measured step times."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ..storage.layout import RECORD_FILE


def _card(device: str) -> list[str]:
    import torch

    lines = [f"- torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})"]
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.device(device))
        lines.insert(0, f"- card: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
    else:
        lines.insert(0, "- card: none (the CPU self-check: figures are not GPU figures)")
    return lines


def _stages(results: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| stage | status | seconds (limit) | log |", "| --- | --- | --- | --- |"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['status']}{' (' + r['why'] + ')' if r.get('why') else ''} | "
                    f"{r['seconds']:.0f} ({r['limit_s']:.0f}) | {r.get('log') or '-'} |")
    return rows


def _suite(out: Path) -> list[str]:
    path = out / "junit.xml"
    if not path.is_file():
        return ["- no JUnit XML (the stage did not get that far)"]
    suites = ET.parse(path).getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    get = lambda k: int(suite.get(k, 0))  # noqa: E731
    ran = get("tests") - get("skipped")
    lines = [f"- {get('tests')} tests: {ran - get('failures') - get('errors')} passed, {get('failures')} failed, "
             f"{get('errors')} errors, {get('skipped')} skipped"]
    for case in suite.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            lines.append(f"  - FAILED {case.get('name')}: {(bad.get('message') or '').splitlines()[0][:200]}")
    printed = [line for line in (out / "logs" / "gpu-suite.log").read_text(errors="replace").splitlines()
               if line.startswith("[gpu]")] if (out / "logs" / "gpu-suite.log").is_file() else []
    return lines + [f"  - {line}" for line in printed]


def _bench(out: Path) -> list[str]:
    rows = ["| policy | model | precision | ms/step | augmentation ms | step ms | peak GiB |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    notes, found = [], False
    for name in ("eager_details.json", "compiled_details.json", "eager_augmentation.json"):
        path = out / "bench" / name
        if not path.is_file():
            continue
        doc = json.loads(path.read_text())
        notes += doc.get("notes", [])
        for policy, models in doc["measured"].items():
            for model, precs in models.items():
                for prec, m in precs.items():
                    found = True
                    aug = f"{m['aug_ms']['median']:.2f}" + (" (graph)" if m.get("cuda_graphs") else " (eager)")
                    peak = "-" if m.get("peak_memory_gib") is None else f"{m['peak_memory_gib']:.2f}"
                    rows.append(f"| {policy} | {model} | {prec} | {m['loop_ms']['median']:.2f} | {aug} | "
                                f"{m['step_on_fixed_batch_ms']['median']:.2f} | {peak} |")
        for p in doc.get("packing", []):
            notes.append(f"{p['trials']} packed trial(s): {p['steps_per_s']:.1f} steps/s in all")
    if not found:
        return ["- nothing measured"] + [f"- {n}" for n in notes]
    return rows + [""] + [f"- {n}" for n in notes]


def _short_run(out: Path) -> list[str]:
    path = out / "short-run" / RECORD_FILE
    if not path.is_file():
        return ["- no run record"]
    doc = json.loads(path.read_text())
    h, s = doc["history"], doc["summary"]
    if not h:
        return ["- no evaluation yet"]
    speed = h[-1]["images_per_s"] / h[-1]["samples_per_step"]
    return [f"- {doc['config']['arch']}-{doc['config']['depth']}-{doc['config']['width']}, {doc['step']} steps, "
            f"{doc.get('precision')}: test accuracy {h[-1]['test_acc']:.2f} % (median of the last evaluations "
            f"{s['median20_acc']:.2f} %, best {s['best_acc']:.2f} %), {speed:.1f} steps/s in its last epoch"]


def _plans(out: Path) -> list[str]:
    log = out / "logs" / "plans.log"
    if not log.is_file():
        return ["- not run"]
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if re.match(r"\[plan\] (fixmatch-|GPU-hours:|precision:|  )", line)]
    return [f"    {line}" for line in lines] or ["- no plan printed (see the log)"]


SWEEP_NOTE = ("scikit-learn's digits written as CIFAR-10 (so the row says cifar10@250), a few hundred steps: it shows "
              "that a Ray trial trains end to end on the device; the paper column is CIFAR-10's and does not apply")


def write_summary(out: Path, results: dict[str, dict[str, Any]], device: str) -> Path:
    sweep_log = out / "logs" / "sweep.log"
    sweep = [line for line in sweep_log.read_text(errors="replace").splitlines() if line.startswith("|")] \
        if sweep_log.is_file() else []
    parts = ["# First run on this machine", "", *_card(device), "", "## Stages", "", *_stages(results), "",
             "## GPU suite (`pytest -m gpu`)", "", *_suite(out), "",
             "## Step times (`bench gpu`: median of the timed windows)", "", *_bench(out), "",
             "## Short run (digits at 32 x 32 x 3, the device path)", "", *_short_run(out), "",
             "## One-trial sweep", "", SWEEP_NOTE, "", *(sweep or ["- no results table (see the log)"]), "",
             "## Plans with these step times", "", *_plans(out), ""]
    path = out / "summary.md"
    path.write_text("\n".join(parts))
    return path
