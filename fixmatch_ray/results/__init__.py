"""Results of experiments: read run records, aggregate with pandas, render tables and plots.

In a notebook::

    from fixmatch_ray import results
    df = results.load("results/quick")       # one row per trial x evaluation
    results.summary("results/quick")         # the table the report prints, as a DataFrame
"""
from __future__ import annotations

import pandas as pd

from .aggregate import aggregate, history_frame
from .read import TrialResult, read_trials

__all__ = ["TrialResult", "load", "read_trials", "summary"]


def load(experiment: str) -> pd.DataFrame:
    """Every evaluation of every trial of ``experiment`` (a directory or URI): one row per trial ×
    evaluation, with the setting's axes, the seed and the trial's status as columns."""
    return history_frame(read_trials(experiment))


def summary(experiment: str, include_unfinished: bool = False) -> pd.DataFrame:
    """The per-setting table of ``report`` (n, mean and sample std of each metric, paper error)."""
    rows = aggregate(read_trials(experiment), include_unfinished)
    flat = [{k: v for k, v in r.items() if not isinstance(v, dict) or k == "paper_error"} for r in rows]
    for f, r in zip(flat, rows):
        for key in ("median20_acc", "best_acc", "last_acc", "error"):
            f[f"{key}_mean"], f[f"{key}_std"] = r[key]["mean"], r[key]["std"]
        paper = f.pop("paper_error")
        f["paper_error_mean"], f["paper_error_std"] = (paper["mean"], paper["std"]) if paper else (None, None)
    return pd.DataFrame(flat)
