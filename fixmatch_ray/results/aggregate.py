"""Per-setting statistics of an experiment's trials, with pandas (paper protocol).

Per setting (dataset, label count and any other axis, e.g. ``lambda_u``): n finished trials and
mean ± std of the paper metric (median EMA test accuracy over the last 20 evaluations), of the
best and of the last accuracy, and the error (100 − acc); of the paper metric also the median
and the range (min–max) over the trials, what the paper gives for barely supervised runs. Where
the settings differ in ``split_seed`` alone (several labeled sets, each trained with several
seeds), :func:`pooled` gives the same over all of a setting's labeled sets. std is the sample standard deviation
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
    """One row per trial × evaluation, with the setting's axes, the run's algorithm and every one of
    its options (resolved values, from the run record), and the seed as columns. An axis one
    setting leaves at its default has that trial's resolved value, never NaN."""
    axes = list(dict.fromkeys(k for t in trials for k in t.setting))  # every trial's value of every axis
    rows = [{"setting": t.label, **{k: _value(t, k) for k in axes}, **algorithm_options(t), "seed": t.seed,
             "status": t.status, **h} for t in trials for h in t.history]
    return pd.DataFrame(rows)


def algorithm_options(t: TrialResult) -> dict[str, Any]:
    """The trial's algorithm and its options' resolved values (only ``algorithm`` when the algorithm
    is not installed here to say which keys are its options)."""
    from ..config.run import algorithm_option_names

    algorithm = t.run.get("algorithm", "fixmatch")
    return {"algorithm": algorithm, **{k: t.run[k] for k in algorithm_option_names(algorithm) if k in t.run}}


def train_metrics_table(trials: list[TrialResult], include_unfinished: bool = False) -> list[dict[str, Any]]:
    """Per setting: the mean over its counted trials of each training metric (the algorithm's
    ``train_*`` record names) at the last evaluation."""
    rows: dict[str, dict[str, list[float]]] = {}
    for t in trials:
        if t.history and (t.status == "finished" or include_unfinished):
            last = rows.setdefault(t.label, {})
            for k, v in t.history[-1].items():
                if k.startswith("train_"):
                    last.setdefault(k, []).append(v)
    return [{"setting": label, **{k: sum(v) / len(v) for k, v in metrics.items()}} for label, metrics in rows.items()]


def _counted(df: pd.DataFrame, include_unfinished: bool) -> pd.DataFrame:
    return df[(df.status == "finished") | (include_unfinished & (df.evals > 0))]


def spread(values: pd.Series) -> dict[str, float]:
    """Mean, sample std (ddof = 1), median, min and max of ``values`` (NaN when empty)."""
    if values.empty:
        return {k: math.nan for k in ("mean", "std", "median", "min", "max")}
    return {"mean": float(values.mean()), "std": float(values.std()), "median": float(values.median()),
            "min": float(values.min()), "max": float(values.max())}


def aggregate(trials: list[TrialResult], include_unfinished: bool = False) -> list[dict[str, Any]]:
    """One row per setting; only finished trials count in n unless ``include_unfinished``."""
    if not trials:
        return []
    df = trials_frame(trials)
    counted = _counted(df, include_unfinished)
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
        row["median20_acc"] = spread(mine.median20_acc.dropna())
        row["amp"] = first.run.get("amp", "off")  # the paper's runs are fp32 (amp off)
        err_mean, err_std = 100 - row["median20_acc"]["mean"], row["median20_acc"]["std"]
        row["error"] = {"mean": err_mean, "std": err_std}
        ref = paper_reference(first.setting, first.run)
        row["paper_error"] = {"mean": ref[0], "std": ref[1]} if ref else None
        row["delta_paper_std"] = (err_mean - ref[0]) / ref[1] if ref and len(mine) else None
        rows.append(row)
    return rows


SPLIT_AXIS = "split_seed"  # picks the labeled set apart from the training seed


def _without_split(label: str) -> str:
    return " ".join(w for w in label.split(" ") if not w.startswith(f"{SPLIT_AXIS}="))


def pooled(trials: list[TrialResult], include_unfinished: bool = False) -> list[dict[str, Any]]:
    """One row per group of settings that differ only in ``split_seed``, over all their trials:
    the number of labeled sets, n, and the :func:`spread` of the paper metric (the paper's barely
    supervised figures: median and range over 4 sets x 4 runs). Empty when no setting has
    ``split_seed`` as an axis with two or more values."""
    df = trials_frame(trials)
    if df.empty:
        return []
    df["group"] = [_without_split(t.label) for t in trials]
    df["split"] = [t.setting.get(SPLIT_AXIS) for t in trials]
    counted = _counted(df, include_unfinished)
    rows = []
    for group, all_of in df.groupby("group", sort=False):
        sets = sorted({s for s in all_of.split if s is not None})
        if len(sets) < 2:
            continue
        mine = counted[counted.group == group]
        rows.append({"setting": group, "split_seeds": sets, "n": len(mine),
                     "median20_acc": spread(mine.median20_acc.dropna())})
    return rows


# -- the ablation view: the result by the axis the settings differ in ----------------------------
def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def ablation_axes(trials: list[TrialResult]) -> tuple[str, list[str]] | None:
    """(x axis, other varying axes) of an experiment: the setting keys whose value (from each
    trial's resolved run config, so a key one block leaves out has its value there too) differs
    between settings, in the order the settings name them (a block's own order; across blocks,
    the order of the labels). The x axis is the first of them other than ``dataset``; None when
    every trial has the same setting."""
    keys: list[str] = []
    for t in trials:
        keys += [k for k in t.setting if k not in keys]
    varying = [k for k in keys if len({repr(_value(t, k)) for t in trials}) > 1]
    if not varying:
        return None
    x = next((k for k in varying if k != "dataset"), varying[0])
    return x, [k for k in varying if k != x]


def _value(t: TrialResult, key: str) -> Any:
    return t.run.get(key, t.setting.get(key))


def ablation(trials: list[TrialResult], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The aggregated ``rows`` (:func:`aggregate`) as an ablation: per setting its x value and the
    values of the other varying axes (its series), n, error and accuracy. ``layout`` is ``lines``
    (a numeric x axis and every series with two or more x values: error vs x, a line per series)
    or ``categories`` (one point per setting, labelled by what differs from the most common value
    of each axis, ``baseline``). None when the settings do not differ."""
    axes = ablation_axes(trials)
    if axes is None:
        return None
    x, series_keys = axes
    first = {t.label: t for t in reversed(trials)}
    points = []
    for r in rows:
        t = first[r["setting"]]
        points.append({"setting": r["setting"], x: _value(t, x), **{k: _value(t, k) for k in series_keys},
                       "series": tuple(_value(t, k) for k in series_keys), "n": r["n"], "seeds": r["seeds"],
                       "error": r["error"], "median20_acc": r["median20_acc"]})
    by_series: dict[tuple, list] = {}
    for p in points:
        by_series.setdefault(p["series"], []).append(p[x])
    # a numeric axis is a line, except split_seed: its values name labeled sets, not a scale
    lines = x != SPLIT_AXIS and all(_numeric(p[x]) for p in points) and all(len(set(v)) > 1 for v in by_series.values())
    keys = [x, *series_keys]
    counts = {k: pd.Series([repr(p[k]) for p in points]).value_counts() for k in keys}
    # an axis's baseline: its most common value, where one value is shared by several settings
    modes = {k: c.index[0] for k, c in counts.items() if c.iloc[0] > 1}
    for p in points:
        diff = [f"{k}={p[k]}" for k in keys if repr(p[k]) != modes.get(k)]
        p["label"] = ", ".join(diff) or "baseline"
    if lines:
        order = {s: i for i, s in enumerate(dict.fromkeys(p["series"] for p in points))}
        points.sort(key=lambda p: (order[p["series"]], p[x]))
    baseline = ", ".join(f"{k}={next(p[k] for p in points if repr(p[k]) == m)}" for k, m in modes.items())
    return {"axis": x, "series_axes": series_keys, "layout": "lines" if lines else "categories",
            "baseline": baseline, "points": points}
