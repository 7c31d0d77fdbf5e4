"""Results from a sweep's result files (never from logs): per-setting n, mean ± std."""
from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrialResult:
    name: str
    label: str
    seed: int
    setting: dict[str, Any]
    status: str  # finished | running | failed
    total_steps: int
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def read_trials(experiment: str | Path) -> list[TrialResult]:
    """Every trial of a Tune experiment directory, from its params.json and result.json."""
    out = []
    for params_file in sorted(Path(experiment).glob("*/params.json")):
        d = params_file.parent
        trial = json.loads(params_file.read_text())["trial"]
        rows = []
        result_file = d / "result.json"
        if result_file.is_file():
            for line in result_file.read_text().splitlines():
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:  # a row being written right now
                        pass
        history = [r for r in rows if "test_acc" in r]
        total = trial["run"]["total_steps"]
        done = bool(history) and history[-1]["step"] >= total
        failed = (d / "error.txt").is_file() and not done
        status = "finished" if done else ("failed" if failed else "running")
        out.append(TrialResult(trial["name"], trial["label"], trial["seed"], trial["setting"], status, total, history))
    return out


def aggregate(trials: list[TrialResult]) -> list[dict[str, Any]]:
    """Per setting: n finished trials and mean ± std (ddof=1) of median-of-last-20 accuracy."""
    groups: dict[str, list[TrialResult]] = {}
    for t in trials:
        groups.setdefault(t.label, []).append(t)
    rows = []
    for label, ts in groups.items():
        done = [t for t in ts if t.status == "finished"]
        accs = [t.final["median20_acc"] for t in done]
        rows.append({
            "setting": label, "n": len(accs),
            "mean": statistics.fmean(accs) if accs else math.nan,
            "std": statistics.stdev(accs) if len(accs) > 1 else math.nan,
            "running": sum(t.status == "running" for t in ts), "failed": sum(t.status == "failed" for t in ts),
        })
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| setting | n | median-of-last-20 acc (%) | running | failed |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        acc = "-" if r["n"] == 0 else f"{r['mean']:.2f} ± {r['std']:.2f}" if r["n"] > 1 else f"{r['mean']:.2f}"
        lines.append(f"| {r['setting']} | {r['n']} | {acc} | {r['running']} | {r['failed']} |")
    return "\n".join(lines)


def report_experiment(experiment: str | Path) -> str:
    from .checkpoint import atomic_write_bytes

    table = markdown(aggregate(read_trials(experiment)))
    print(table)
    if "://" not in str(experiment):
        atomic_write_bytes(Path(experiment) / "results.md", (table + "\n").encode())
    return table


if __name__ == "__main__":
    report_experiment(sys.argv[1])
