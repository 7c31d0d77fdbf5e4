"""The paper's Table 2 layout of a comparison: rows = methods, columns = cells (dataset@labels).

Each cell holds our error (mean ± sample std over the n finished seeds) beside the paper's value and
the difference in units of the paper's std; a cell the paper has no number for shows ours alone.
Rendered as Markdown, CSV (one line per method × cell), LaTeX (a ``tabular`` to ``\\input``) and
one figure (per cell, each method's error with its spread, the paper's value as an open marker).
A *method* is the trial's algorithm, FixMatch split by its augmentation policy as the paper's rows.
"""
from __future__ import annotations

import csv
import io
import math
from typing import Any

from .read import TrialResult

# the paper's row order and names; any other algorithm follows under its own name
METHODS = {"pimodel": "Π-Model", "pseudolabel": "Pseudo-Labeling", "meanteacher": "Mean Teacher",
           "mixmatch": "MixMatch", "uda": "UDA", "remixmatch": "ReMixMatch"}
FIXMATCH_POLICIES = {"randaugment": "FixMatch (RA)", "ctaugment": "FixMatch (CTA)"}
DATASET_ORDER = ("cifar10", "cifar100", "svhn", "stl10")
FILES = ("table2.md", "table2.csv", "table2.tex", "table2.png")


def method_of(run: dict[str, Any]) -> str:
    """The Table 2 row of a run: its algorithm's name, FixMatch's by policy; a run whose
    setting changes a FixMatch knob (the supervised λu = 0 baseline) is named by it."""
    algorithm = run.get("algorithm", "fixmatch")
    if algorithm == "fixmatch":
        name = FIXMATCH_POLICIES.get(run.get("policy", "randaugment"), f"FixMatch ({run.get('policy')})")
        return name if run.get("lambda_u", 1.0) != 0 else "Supervised (λu = 0)"
    return METHODS.get(algorithm, algorithm)


def _order(methods: set[str]) -> list[str]:
    known = [*METHODS.values(), *FIXMATCH_POLICIES.values()]
    return [m for m in known if m in methods] + sorted(methods - set(known))


def _cell_key(cell: tuple[str, int]) -> tuple[int, str, int]:
    ds, n = cell
    return (DATASET_ORDER.index(ds) if ds in DATASET_ORDER else len(DATASET_ORDER), ds, n)


def table2(trials: list[TrialResult], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The aggregated ``rows`` (:func:`.aggregate.aggregate`) by method and cell: ``methods``,
    ``cells`` (``(dataset, labels)``, the paper's order) and ``entries[(method, cell)]`` with n,
    error, paper error and the difference in paper σ. Settings that fall on the same method and
    cell (e.g. another axis) keep the first."""
    run_of = {t.label: t.run for t in reversed(trials)}
    entries: dict[tuple[str, tuple[str, int]], dict[str, Any]] = {}
    for r in rows:
        run = run_of[r["setting"]]
        key = (method_of(run), (run["dataset"], int(run["num_labeled"])))
        entries.setdefault(key, {"n": r["n"], "error": r["error"], "paper": r["paper_error"],
                                 "delta": r["delta_paper_std"], "setting": r["setting"]})
    methods = _order({m for m, _ in entries})
    cells = sorted({c for _, c in entries}, key=_cell_key)
    return {"methods": methods, "cells": cells, "entries": entries}


def _pm(d: dict[str, float] | None) -> str:
    if d is None or math.isnan(d["mean"]):
        return "-"
    return f"{d['mean']:.2f}" if math.isnan(d["std"]) else f"{d['mean']:.2f} ± {d['std']:.2f}"


def cell_text(e: dict[str, Any] | None) -> str:
    """``ours ± std (n) · paper p ± s · Δ +x.xxσ``; ``-`` where nothing ran."""
    if e is None:
        return "-"
    text = f"{_pm(e['error'])} ({e['n']})"
    if e["paper"] is not None:
        text += f" · paper {_pm(e['paper'])}"
        if e["delta"] is not None:
            text += f" · Δ {e['delta']:+.2f}σ"
    return text


def _cell_name(cell: tuple[str, int]) -> str:
    return f"{cell[0]}@{cell[1]}"


def markdown(t: dict[str, Any]) -> str:
    head = ["method", *(_cell_name(c) for c in t["cells"])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in t["methods"]:
        lines.append("| " + " | ".join([m, *(cell_text(t["entries"].get((m, c))) for c in t["cells"])]) + " |")
    return "\n".join(lines) + ("\n\nerror % (median of the last 20 evaluations): mean ± sample std (n seeds); "
                               "paper: Table 2 of Sohn et al. (2020); Δ: (ours − paper) / paper std.\n")


CSV_FIELDS = ("method", "cell", "dataset", "num_labeled", "n", "error_mean", "error_std", "paper_error_mean",
              "paper_error_std", "delta_paper_std")


def to_csv(t: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for m in t["methods"]:
        for c in t["cells"]:
            e = t["entries"].get((m, c))
            if e is None:
                continue
            p = e["paper"] or {"mean": "", "std": ""}
            w.writerow([m, _cell_name(c), c[0], c[1], e["n"], e["error"]["mean"], e["error"]["std"], p["mean"],
                        p["std"], "" if e["delta"] is None else e["delta"]])
    return buf.getvalue()


def _tex(s: str) -> str:
    for a, b in (("_", r"\_"), ("%", r"\%"), ("±", r"$\pm$"), ("Π", r"$\Pi$"), ("λu", r"$\lambda_u$"),
                 ("Δ", r"$\Delta$"), ("σ", r"$\sigma$"), ("·", ";"), ("@", "@")):
        s = s.replace(a, b)
    return s


def latex(t: dict[str, Any]) -> str:
    """A ``tabular`` (booktabs) for ``\\input``: a method's line of ours, then its line of the paper's."""
    cols = len(t["cells"])
    lines = [r"\begin{tabular}{l" + "r" * cols + "}", r"\toprule",
             " & ".join(["Method", *(_tex(_cell_name(c)) for c in t["cells"])]) + r" \\", r"\midrule"]
    for m in t["methods"]:
        ours, paper = [], []
        for c in t["cells"]:
            e = t["entries"].get((m, c))
            ours.append("-" if e is None else _tex(f"{_pm(e['error'])} ({e['n']})"))
            paper.append("-" if e is None or e["paper"] is None else _tex(
                _pm(e["paper"]) + ("" if e["delta"] is None else f" [{e['delta']:+.2f}σ]")))
        lines.append(" & ".join([_tex(m), *ours]) + r" \\")
        if any(p != "-" for p in paper):
            lines.append(" & ".join([r"\quad paper", *paper]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def plot(t: dict[str, Any], title: str) -> bytes:
    """PNG bytes: one panel per cell; per method our error (mean ± std, filled) and the paper's
    (mean ± std, open), so each method's distance from its paper value reads at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells, methods = t["cells"], t["methods"]
    fig, axes = plt.subplots(1, len(cells), figsize=(max(4.0, 3.2 * len(cells)), 0.45 * len(methods) + 2),
                             sharey=True, squeeze=False)
    std = lambda d: 0.0 if math.isnan(d["std"]) else d["std"]  # noqa: E731  (n = 1)
    for ax, c in zip(axes[0], cells):
        for i, m in enumerate(methods):
            e = t["entries"].get((m, c))
            if e is None:
                continue
            if not math.isnan(e["error"]["mean"]):
                ax.errorbar(e["error"]["mean"], i, xerr=std(e["error"]), fmt="o", color="C0", capsize=3)
            if e["paper"] is not None:
                ax.errorbar(e["paper"]["mean"], i + 0.2, xerr=e["paper"]["std"], fmt="o", mfc="none",
                            color="C3", capsize=3)
        ax.set_title(_cell_name(c), fontsize="small")
        ax.set_xlabel("error %")
        ax.grid(alpha=0.3)
    axes[0][0].set_yticks(range(len(methods)), methods)
    axes[0][0].invert_yaxis()
    fig.suptitle(f"{title}  (filled: ours, open: paper)", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def render(trials: list[TrialResult], rows: list[dict[str, Any]], title: str) -> dict[str, bytes] | None:
    """Every Table 2 output (:data:`FILES`) of an experiment comparing two or more methods, else None."""
    t = table2(trials, rows)
    if len(t["methods"]) < 2:
        return None
    return {"table2.md": markdown(t).encode(), "table2.csv": to_csv(t).encode(), "table2.tex": latex(t).encode(),
            "table2.png": plot(t, title)}
