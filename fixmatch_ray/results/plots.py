"""Pictures of a sweep's trials: mean ± std curves across seeds per setting (used by ``report``)."""
from __future__ import annotations

import io

import numpy as np

from .read import TrialResult

PLOTS = {"acc_vs_step.png": ("test_acc", "EMA test accuracy (%)"), "mask_vs_step.png": ("mask_rate", "mask rate")}


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
    """PNG bytes: a mean line with a ±std band across seeds per setting, for accuracy and mask rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = {}
    for name, (key, ylabel) in PLOTS.items():
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


