"""Paper-protocol results of an experiment, from its run records (never from logs).

    python -m fixmatch_ray.report <experiment dir or storage URI> [--include-unfinished]

Per setting: n finished trials and mean ± sample std of the paper metric (median EMA test
accuracy over the last 20 evaluations), of the best and of the last accuracy, as accuracy and as
error (100 − acc); beside settings the paper ran, its Table 2 error and our distance from it in
units of the paper's std; where the settings differ in some axes, the same by that axis (the
ablation view, ``ablation.png``); the training metrics of the trials' algorithm at the last
evaluation, under their record names, and a curve of each (``<name>_vs_step.png``); where the
records have them, the test accuracy at the best validation evaluation and the last evaluation's
balanced accuracy, macro-F1 and top-5, and its confusion matrix (``confusion_<setting>.png``);
where two or more methods ran, the paper's Table 2 layout (methods x cells: table2.{md,csv,tex,png}).
Writes results.{md,csv,json,tex} and plots atomically into the
experiment, and a TensorBoard HParams summary per trial. Read-only otherwise: no lease needed.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from ..storage import Store
from ..storage import split_last
from ..storage.layout import ABLATION_PLOT, results_file
from .aggregate import METRICS, ablation, aggregate, pooled, train_metrics_table
from .figures import confusion_by_setting, confusion_file, figures_markdown, figures_table, plot_confusion
from .hparams import write_hparams
from .plots import plot_ablation, plot_curves
from .read import read_trials
from .render import ablation_markdown, latex, markdown, to_csv, train_metrics_markdown
from .table2 import render as render_table2


def report_experiment(experiment: str, include_unfinished: bool = False, plots: bool = True,
                      quiet: bool = False) -> list[dict[str, Any]]:
    """Aggregate, print the Markdown table and write every output into the experiment."""
    store = Store(str(experiment))
    trials = read_trials(experiment)
    rows = aggregate(trials, include_unfinished)
    sets = pooled(trials, include_unfinished)  # settings run on several labeled sets, all together
    view = ablation(trials, rows)
    train = train_metrics_table(trials, include_unfinished)
    md = markdown(rows, sets) + (f"\n{ablation_markdown(view)}" if view else "") + (
        f"\n{train_metrics_markdown(train)}" if train else "")
    figures = figures_table(trials, include_unfinished)
    md += f"\n{figures_markdown(figures)}" if figures else ""
    table2 = render_table2(trials, rows, split_last(str(experiment))[1]) if trials else None
    if table2 and not plots:
        table2.pop("table2.png")
    if table2:
        md += "\n### Table 2 layout\n\n" + table2["table2.md"].decode()
    if not quiet:
        print(md)
    doc = {"experiment": str(experiment), "std_ddof": 1, "metric": "median of the last 20 EMA evaluations",
           "settings": rows, "pooled": sets, "ablation": view, "train_metrics": train, "figures": figures,
           "trials": [{"name": t.name, "setting": t.label, "seed": t.seed, "status": t.status,
                       "step": t.final.get("step", 0), **{m: t.final.get(m) for m in METRICS}} for t in trials]}
    outputs = {results_file("md"): md, results_file("csv"): to_csv(rows, sets),
               results_file("json"): json.dumps(doc, indent=1, allow_nan=True), results_file("tex"): latex(rows)}
    for name, text in outputs.items():
        store.write_bytes(name, text.encode())
    for name, data in (table2 or {}).items():
        store.write_bytes(name, data)
    if plots and trials:
        for name, png in plot_curves(trials).items():
            store.write_bytes(name, png)
        for label, (matrix, classes) in confusion_by_setting(trials, include_unfinished).items():
            store.write_bytes(confusion_file(label), plot_confusion(matrix, classes, f"{label}: last evaluation"))
        if view:
            title = f"{split_last(str(experiment))[1]}: error vs {view['axis']}"
            store.write_bytes(ABLATION_PLOT, plot_ablation(view, title))
    if trials:
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
        print(f"error: {args.experiment!r} holds no sweep trials (expected run records at train/<run>/metrics.json)", file=sys.stderr)
        return 2
    report_experiment(args.experiment, args.include_unfinished, plots=not args.no_plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
