"""Paper-protocol results from a sweep's result files (never from logs).

    python -m fixmatch_ray.report <experiment dir or storage URI> [--include-unfinished]

Per setting (dataset, label count and any extra axis such as ``lambda_u``): n finished trials
and mean ± std of the paper metric (median EMA test accuracy over the last 20 evaluations), of
the best and of the last accuracy, as accuracy and as error (100 − acc). std is the sample
standard deviation (ddof = 1): the seeds are a sample of the runs one could have made, and with
n = 5 the population formula would understate the spread by ~11 %. Beside CIFAR settings run
with FixMatch's defaults, the paper's Table 2 (RandAugment) error and our distance from it in
units of the paper's std. Writes results.{md,csv,json,tex} and plots atomically into the
experiment, and a TensorBoard HParams summary per trial.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..config import RunConfig
from ..storage import Store

# FixMatch (RA), Table 2 of Sohn et al. 2020: error rate %, mean ± std over 5 folds.
PAPER_ERROR = {
    ("cifar10", 40): (13.81, 3.37), ("cifar10", 250): (5.07, 0.65), ("cifar10", 4000): (4.26, 0.05),
    ("cifar100", 400): (48.85, 1.75), ("cifar100", 2500): (28.29, 0.11), ("cifar100", 10000): (22.60, 0.12),
}
METRICS = ("median20_acc", "best_acc", "last_acc")
RESULT_FILES = ("results.md", "results.csv", "results.json", "results.tex")


@dataclass
class TrialResult:
    name: str
    label: str
    seed: int
    setting: dict[str, Any]
    status: str  # finished | running | failed
    total_steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def read_trials(experiment: str) -> list[TrialResult]:
    """Every trial of a Tune experiment (directory or URI): params.json + result.json rows."""
    store = Store(str(experiment))
    out = []
    for sub in store.subdirs():
        params = store.read_text(f"{sub}/params.json")
        if params is None or '"trial"' not in params:
            continue
        trial = json.loads(params)["trial"]
        rows = []
        for line in (store.read_text(f"{sub}/result.json") or "").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a row being written right now
                pass
        total = trial["run"]["total_steps"]
        history = []
        for r in rows:
            if "test_acc" not in r:
                continue
            if history and r["step"] == history[-1]["step"] == total:
                continue  # a run restored at its end reports its final result once more
            history.append(r)
        done = bool(history) and history[-1]["step"] >= total
        failed = not done and store.read_text(f"{sub}/error.txt") is not None
        status = "finished" if done else ("failed" if failed else "running")
        out.append(TrialResult(trial["name"], trial["label"], trial["seed"], trial["setting"], status, total,
                               history, trial["run"]))
    return sorted(out, key=lambda t: (t.label, t.seed))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1); std is NaN for fewer than two values."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def paper_reference(setting: dict[str, Any]) -> tuple[float, float] | None:
    """The paper's (error, std) for a setting run with FixMatch's own hyperparameters."""
    ref = PAPER_ERROR.get((setting.get("dataset"), setting.get("num_labeled")))
    defaults = RunConfig()
    others = {k: v for k, v in setting.items() if k not in ("dataset", "num_labeled")}
    if ref is None or any(getattr(defaults, k, None) != v for k, v in others.items()):
        return None  # e.g. the supervised baseline (lambda_u = 0) has no paper number
    return ref


def aggregate(trials: list[TrialResult], include_unfinished: bool = False) -> list[dict[str, Any]]:
    """One row per setting; only finished trials count in n unless ``include_unfinished``."""
    groups: dict[str, list[TrialResult]] = {}
    for t in trials:
        groups.setdefault(t.label, []).append(t)
    rows = []
    for label, ts in groups.items():
        counted = [t for t in ts if t.status == "finished" or (include_unfinished and t.history)]
        row: dict[str, Any] = {"setting": label, **ts[0].setting, "n": len(counted),
                               "seeds": [t.seed for t in counted],
                               "running": sum(t.status == "running" for t in ts),
                               "failed": sum(t.status == "failed" for t in ts)}
        for m in METRICS:
            mean, std = mean_std([t.final[m] for t in counted])
            row[m] = {"mean": mean, "std": std}
        err_mean, err_std = 100 - row["median20_acc"]["mean"], row["median20_acc"]["std"]
        row["error"] = {"mean": err_mean, "std": err_std}
        ref = paper_reference(ts[0].setting)
        row["paper_error"] = {"mean": ref[0], "std": ref[1]} if ref else None
        row["delta_paper_std"] = (err_mean - ref[0]) / ref[1] if ref and counted else None
        rows.append(row)
    return rows


def _pm(d: dict[str, float] | None, digits: int = 2) -> str:
    if d is None or math.isnan(d["mean"]):
        return "-"
    if math.isnan(d["std"]):
        return f"{d['mean']:.{digits}f}"
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


COLUMNS = ("setting", "n", "error % (median of last 20)", "paper error %", "Δ (paper σ)",
           "acc % (median of last 20)", "best acc %", "last acc %", "running", "failed")


def table_cells(r: dict[str, Any]) -> list[str]:
    delta = "-" if r["delta_paper_std"] is None else f"{r['delta_paper_std']:+.2f}"
    return [r["setting"], str(r["n"]), _pm(r["error"]), _pm(r["paper_error"]), delta, _pm(r["median20_acc"]),
            _pm(r["best_acc"]), _pm(r["last_acc"]), str(r["running"]), str(r["failed"])]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n\nmean ± sample std (ddof=1) over the n finished seeds; error = 100 − accuracy.\n"


def latex(rows: list[dict[str, Any]]) -> str:
    esc = lambda s: s.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("σ", r"$\sigma$")  # noqa: E731
    cols = ("setting", "n", "error % (median of last 20)", "paper error %", "Δ (paper σ)")
    lines = [r"\begin{tabular}{lrrrr}", r"\toprule", " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in table_cells(r)[:5]) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["setting", "n", "error_mean", "error_std", "paper_error", "paper_std", "delta_paper_std",
                *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "running", "failed"])
    for r in rows:
        p = r["paper_error"] or {"mean": "", "std": ""}
        w.writerow([r["setting"], r["n"], r["error"]["mean"], r["error"]["std"], p["mean"], p["std"],
                    "" if r["delta_paper_std"] is None else r["delta_paper_std"],
                    *(r[m][s] for m in METRICS for s in ("mean", "std")), r["running"], r["failed"]])
    return buf.getvalue()


def report_experiment(experiment: str, include_unfinished: bool = False, plots: bool = True,
                      quiet: bool = False) -> list[dict[str, Any]]:
    """Aggregate, print the Markdown table and write every output into the experiment."""
    store = Store(str(experiment))
    trials = read_trials(experiment)
    rows = aggregate(trials, include_unfinished)
    md = markdown(rows)
    if not quiet:
        print(md)
    doc = {"experiment": str(experiment), "std_ddof": 1, "metric": "median of the last 20 EMA evaluations",
           "settings": rows,
           "trials": [{"name": t.name, "setting": t.label, "seed": t.seed, "status": t.status,
                       "step": t.final.get("step", 0), **{m: t.final.get(m) for m in METRICS}} for t in trials]}
    outputs = {"results.md": md, "results.csv": to_csv(rows), "results.json": json.dumps(doc, indent=1, allow_nan=True),
               "results.tex": latex(rows)}
    for name, text in outputs.items():
        store.write_bytes(name, text.encode())
    if plots and trials:
        from .plots import plot_curves

        for name, png in plot_curves(trials).items():
            store.write_bytes(name, png)
    if trials:
        from .plots import write_hparams

        write_hparams(store, trials)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fixmatch_ray.report", description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", help="experiment directory or storage URI (<storage>/<name>)")
    p.add_argument("--include-unfinished", action="store_true", help="count running trials at their last eval")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    store = Store(args.experiment)
    if not store.exists():
        print(f"error: experiment {args.experiment!r} does not exist", file=sys.stderr)
        return 2
    if not read_trials(args.experiment):
        print(f"error: {args.experiment!r} holds no sweep trials (expected <trial>/params.json files)", file=sys.stderr)
        return 2
    report_experiment(args.experiment, args.include_unfinished, plots=not args.no_plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
