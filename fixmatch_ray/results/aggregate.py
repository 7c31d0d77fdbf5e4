"""Per-setting statistics of an experiment's trials, with pandas (paper protocol).

Per setting (dataset, label count and any other axis, e.g. ``lambda_u``): n finished trials and
mean ± std of the paper metric (median EMA test accuracy over the last 20 evaluations), of the
best and of the last accuracy, and the error (100 − acc). std is the sample standard deviation
(ddof = 1): the seeds are a sample of the runs one could have made, and with n = 5 the
population formula would understate the spread by ~11 %.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .paper import paper_reference
from .read import TrialResult

METRICS = ("median20_acc", "best_acc", "last_acc")


def trials_frame(trials: list[TrialResult]) -> pd.DataFrame:
    """One row per trial: setting, seed, status, steps done and the final metrics."""
    rows = [{"setting": t.label, "seed": t.seed, "status": t.status, "step": t.final.get("step", 0),
             "evals": len(t.history), **{m: t.final.get(m, math.nan) for m in METRICS}} for t in trials]
    return pd.DataFrame(rows, columns=["setting", "seed", "status", "step", "evals", *METRICS])


def history_frame(trials: list[TrialResult]) -> pd.DataFrame:
    """One row per trial × evaluation, with the setting's axes and the seed as columns."""
    rows = [{"setting": t.label, **t.setting, "seed": t.seed, "status": t.status, **h}
            for t in trials for h in t.history]
    return pd.DataFrame(rows)


def aggregate(trials: list[TrialResult], include_unfinished: bool = False) -> list[dict[str, Any]]:
    """One row per setting; only finished trials count in n unless ``include_unfinished``."""
    if not trials:
        return []
    df = trials_frame(trials)
    counted = df[(df.status == "finished") | (include_unfinished & (df.evals > 0))]
    stats = counted.groupby("setting", sort=False)[list(METRICS)].agg(["mean", "std"])
    rows = []
    for label, group in df.groupby("setting", sort=False):
        first = next(t for t in trials if t.label == label)
        mine = counted[counted.setting == label]
        row: dict[str, Any] = {"setting": label, **first.setting, "n": len(mine), "seeds": mine.seed.tolist(),
                               "running": int((group.status == "running").sum()),
                               "failed": int((group.status == "failed").sum())}
        for m in METRICS:
            mean, std = (stats.loc[label, (m, "mean")], stats.loc[label, (m, "std")]) if label in stats.index \
                else (math.nan, math.nan)
            row[m] = {"mean": float(mean), "std": float(std)}
        err_mean, err_std = 100 - row["median20_acc"]["mean"], row["median20_acc"]["std"]
        row["error"] = {"mean": err_mean, "std": err_std}
        ref = paper_reference(first.setting, first.run)
        row["paper_error"] = {"mean": ref[0], "std": ref[1]} if ref else None
        row["delta_paper_std"] = (err_mean - ref[0]) / ref[1] if ref and len(mine) else None
        rows.append(row)
    return rows
