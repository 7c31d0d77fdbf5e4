"""Pictures of a sweep's trials (used by ``report``): mean ± std curves across seeds per setting, and
the ablation plot: error against the axis the settings differ in."""
from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from ..storage.layout import ACC_PLOT, CURVE_PLOT
from .read import TrialResult


def curve_plots(trials: list[TrialResult]) -> dict[str, tuple[str, str]]:
    """File name → (record key, y label): the test accuracy, and every training metric the trials'
    algorithms report, under its record name (``train_mask_vs_step.png``...)."""
    plots = {ACC_PLOT: ("test_acc", "EMA test accuracy (%)")}
    for key in train_metrics(trials):
        plots[CURVE_PLOT.format(metric=key)] = (key, key)
    return plots


def train_metrics(trials: list[TrialResult]) -> list[str]:
    """The record names of the algorithms' metrics (``train_*``) in the trials' histories, in order."""
    keys: dict[str, None] = {}
    for t in trials:
        for h in t.history[:1]:
            keys.update((k, None) for k in h if k.startswith("train_"))
    return list(keys)


def curves_by_setting(trials: list[TrialResult], key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per setting: the eval steps all its seeds reached, and a (seeds × steps) matrix of ``key``."""
    out = {}
    groups: dict[str, list] = {}
    for t in trials:
        if t.history:
            groups.setdefault(t.label, []).append({h["step"]: h[key] for h in t.history if key in h})
    for label, runs in groups.items():
        common = sorted(set.intersection(*(set(r) for r in runs)))
        if common:
            out[label] = (np.array(common), np.array([[r[s] for s in common] for r in runs]))
    return out


def plot_curves(trials: list[TrialResult]) -> dict[str, bytes]:
    """PNG bytes: a mean line with a ±std band across seeds per setting, for the test accuracy and
    each training metric (:func:`curve_plots`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = {}
    for name, (key, ylabel) in curve_plots(trials).items():
        fig, ax = plt.subplots(figsize=(8, 5))
        for label, (steps, values) in curves_by_setting(trials, key).items():
            mean = values.mean(0)
            std = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
            (line,) = ax.plot(steps, mean, label=f"{label} (n={len(values)})")
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        pngs[name] = buf.getvalue()
    return pngs




def plot_ablation(view: dict[str, Any], title: str) -> bytes:
    """PNG bytes: error (mean ± sample std over seeds) against the ablated axis — a line per series
    for a numeric axis, else one point per setting labelled by what it changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    x = view["axis"]
    ok = [p for p in view["points"] if not math.isnan(p["error"]["mean"])]
    std = lambda p: 0.0 if math.isnan(p["error"]["std"]) else p["error"]["std"]  # noqa: E731  (n = 1)
    if view["layout"] == "lines":
        for series in dict.fromkeys(p["series"] for p in ok):
            pts = [p for p in ok if p["series"] == series]
            name = ", ".join(f"{k}={v}" for k, v in zip(view["series_axes"], series)) or "error"
            ax.errorbar([p[x] for p in pts], [p["error"]["mean"] for p in pts], yerr=[std(p) for p in pts],
                        marker="o", capsize=4, label=f"{name} (n={'/'.join(str(p['n']) for p in pts)})")
        ax.set_xlabel(x)
        ax.legend(fontsize="small")
    else:
        pos = range(len(ok))
        ax.errorbar(list(pos), [p["error"]["mean"] for p in ok], yerr=[std(p) for p in ok], fmt="o", capsize=4)
        ax.set_xticks(list(pos), [f"{p['label']}\n(n={p['n']})" for p in ok], rotation=30, ha="right",
                      fontsize="small")
        ax.set_xlabel(f"baseline: {view['baseline']}" if view["baseline"] else x, fontsize="small")
    ax.set_ylabel("error % (median of last 20 evals), mean ± std over seeds")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
