"""Render aggregated rows (:func:`.aggregate.aggregate`) as Markdown, LaTeX and CSV."""
from __future__ import annotations

import csv
import io
import math
from typing import Any

from .aggregate import METRICS


def _pm(d: dict[str, float] | None, digits: int = 2) -> str:
    if d is None or math.isnan(d["mean"]):
        return "-"
    if math.isnan(d["std"]):
        return f"{d['mean']:.{digits}f}"
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def _range(d: dict[str, float], digits: int = 2) -> str:
    """``median [min–max]`` of a :func:`.aggregate.spread`."""
    if math.isnan(d.get("median", math.nan)):
        return "-"
    return f"{d['median']:.{digits}f} [{d['min']:.{digits}f}–{d['max']:.{digits}f}]"


COLUMNS = ("setting", "n", "error % (median of last 20)", "paper error %", "Δ (paper σ)",
           "acc % (median of last 20)", "acc % median [min–max]", "best acc %", "last acc %", "running", "failed")


def paper_cell(r: dict[str, Any]) -> str:
    """The paper's error; where this setting trained under autocast, marked so: the paper's runs
    are fp32, so such a row is not the like-for-like comparison."""
    cell = _pm(r["paper_error"])
    amp = r.get("amp", "off")
    return cell if r["paper_error"] is None or amp == "off" else f"{cell} (ours: amp {amp})"


def table_cells(r: dict[str, Any]) -> list[str]:
    delta = "-" if r["delta_paper_std"] is None else f"{r['delta_paper_std']:+.2f}"
    return [r["setting"], str(r["n"]), _pm(r["error"]), paper_cell(r), delta, _pm(r["median20_acc"]),
            _range(r["median20_acc"]), _pm(r["best_acc"]), _pm(r["last_acc"]), str(r["running"]), str(r["failed"])]


def markdown(rows: list[dict[str, Any]], pooled: list[dict[str, Any]] | None = None) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    text = "\n".join(lines) + ("\n\nmean ± sample std (ddof=1), median and range over the n finished seeds; "
                               "error = 100 − accuracy.\n")
    return text + (f"\n{pooled_markdown(pooled)}" if pooled else "")


def pooled_markdown(pooled: list[dict[str, Any]]) -> str:
    """:func:`.aggregate.pooled` rows: every labeled set's runs together."""
    cols = ("setting", "labeled sets (split_seed)", "n", "acc % median [min–max]", "acc % (median of last 20)")
    lines = ["### Over all labeled sets", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += [f"| {p['setting']} | {', '.join(str(s) for s in p['split_seeds'])} | {p['n']} | "
              f"{_range(p['median20_acc'])} | {_pm(p['median20_acc'])} |" for p in pooled]
    return "\n".join(lines) + "\n"


def latex(rows: list[dict[str, Any]]) -> str:
    esc = lambda s: s.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("σ", r"$\sigma$")  # noqa: E731
    cols = ("setting", "n", "error % (median of last 20)", "paper error %", "Δ (paper σ)")
    lines = [r"\begin{tabular}{lrrrr}", r"\toprule", " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in table_cells(r)[:5]) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


RANGE = ("median", "min", "max")


def to_csv(rows: list[dict[str, Any]], pooled: list[dict[str, Any]] | None = None) -> str:
    """One line per setting, then (``pooled``) one per group of labeled sets, ``split_seeds`` naming
    them (empty on a setting's own line)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["setting", "n", "error_mean", "error_std", "paper_error", "paper_std", "delta_paper_std",
                *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), *(f"median20_acc_{s}" for s in RANGE),
                "running", "failed", "amp", "split_seeds"])
    for r in rows:
        p = r["paper_error"] or {"mean": "", "std": ""}
        w.writerow([r["setting"], r["n"], r["error"]["mean"], r["error"]["std"], p["mean"], p["std"],
                    "" if r["delta_paper_std"] is None else r["delta_paper_std"],
                    *(r[m][s] for m in METRICS for s in ("mean", "std")), *(r["median20_acc"][s] for s in RANGE),
                    r["running"], r["failed"], r.get("amp", "off"), ""])
    for g in pooled or []:
        acc = g["median20_acc"]
        w.writerow([g["setting"], g["n"], 100 - acc["mean"], acc["std"], "", "", "", acc["mean"], acc["std"],
                    *[""] * (2 * (len(METRICS) - 1)), *(acc[s] for s in RANGE), "", "", "",
                    " ".join(str(s) for s in g["split_seeds"])])
    return buf.getvalue()



def ablation_markdown(view: dict[str, Any]) -> str:
    """The :func:`.aggregate.ablation` view as Markdown: the axis value(s) as the row, n = seeds."""
    keys = [view["axis"], *view["series_axes"]]
    cols = [*keys, "n", "error % (median of last 20)", "acc % (median of last 20)", "seeds"]
    lines = [f"### Error by {view['axis']}" + (f" (per {', '.join(view['series_axes'])})" if view["series_axes"] else ""),
             "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for p in view["points"]:
        cells = [str(p[k]) for k in keys] + [str(p["n"]), _pm(p["error"]), _pm(p["median20_acc"]),
                                             ",".join(str(s) for s in p["seeds"]) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def train_metrics_markdown(rows: list[dict[str, Any]]) -> str:
    """:func:`.aggregate.train_metrics_table` as Markdown, a column per metric name."""
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "setting"))
    lines = ["### Training metrics at the last evaluation (mean over the counted seeds)", "",
             "| " + " | ".join(["setting", *keys]) + " |", "|" + "---|" * (len(keys) + 1)]
    for r in rows:
        lines.append("| " + " | ".join([r["setting"], *(f"{r[k]:.4f}" if k in r else "-" for k in keys)]) + " |")
    return "\n".join(lines) + "\n"
