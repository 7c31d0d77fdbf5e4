"""The report's practitioner figures: model selection on the validation split, the last
evaluation's class-level metrics, and a confusion-matrix figure per setting.

Per setting, over its counted trials (finished, or every one with ``--include-unfinished``):
the mean ± sample std of the test accuracy at each trial's best validation evaluation (only for
trials with a validation split: nothing is chosen on the test set), of the best validation
accuracy, and of the last evaluation's balanced accuracy, macro-F1 and top-5 accuracy; and the
confusion matrix of the last evaluation summed over the trials (``confusion_<setting>.png``).
"""
from __future__ import annotations

import io
import re
import statistics
from typing import Any

from .read import TrialResult

SELECTION = ("test_at_best_val_acc", "best_val_acc")
LAST_EVAL = ("test_balanced_acc", "test_macro_f1", "test_top5_acc")


def _counted(trials: list[TrialResult], include_unfinished: bool) -> dict[str, list[TrialResult]]:
    out: dict[str, list[TrialResult]] = {}
    for t in trials:
        if t.history and (t.status == "finished" or include_unfinished):
            out.setdefault(t.label, []).append(t)
    return out


def _stat(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else float("nan")}


def figures_table(trials: list[TrialResult], include_unfinished: bool = False) -> list[dict[str, Any]]:
    """One row per setting with any of the figures above (none for records without them)."""
    rows = []
    for label, mine in _counted(trials, include_unfinished).items():
        row: dict[str, Any] = {"setting": label, "n": len(mine)}
        for key in SELECTION:
            row[key] = _stat([t.summary[key] for t in mine if key in t.summary])
        for key in LAST_EVAL:
            row[key] = _stat([t.history[-1][key] for t in mine if key in t.history[-1]])
        if any(row[k] is not None for k in (*SELECTION, *LAST_EVAL)):
            rows.append(row)
    return rows


def _pm(d: dict[str, float] | None) -> str:
    if d is None:
        return "-"
    return f"{d['mean']:.2f}" if d["std"] != d["std"] else f"{d['mean']:.2f} ± {d['std']:.2f}"


def figures_markdown(rows: list[dict[str, Any]]) -> str:
    cols = ("setting", "n", "test acc % at best validation eval", "best validation acc %", "balanced acc %",
            "macro-F1 %", "top-5 acc %")
    lines = ["### Model selection and class-level figures (last evaluation)", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join([r["setting"], str(r["n"]), *(_pm(r[k]) for k in (*SELECTION, *LAST_EVAL))]) + " |"
              for r in rows]
    return "\n".join(lines) + ("\n\nWith a validation split, the model is chosen on validation accuracy alone; "
                               "'-': no validation split (or fewer than 6 classes for top-5).\n")


def confusion_by_setting(trials: list[TrialResult], include_unfinished: bool = False
                         ) -> dict[str, tuple[list[list[int]], list[str]]]:
    """Per setting: the last evaluation's test confusion matrix summed over its trials, and the class names."""
    out = {}
    for label, mine in _counted(trials, include_unfinished).items():
        mats = [t.history[-1]["test_confusion"] for t in mine if "test_confusion" in t.history[-1]]
        if mats:
            total = [[sum(m[r][c] for m in mats) for c in range(len(mats[0]))] for r in range(len(mats[0]))]
            classes = (mine[0].dataset or {}).get("classes") or list(range(len(total)))
            out[label] = (total, [str(c) for c in classes])
    return out


def confusion_file(label: str) -> str:
    return "confusion_" + re.sub(r"[^A-Za-z0-9@.=_-]+", "_", label) + ".png"


def plot_confusion(matrix: list[list[int]], classes: list[str], title: str) -> bytes:
    """PNG bytes: the confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(matrix)
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * n + 2), max(4, 0.45 * n + 1.5)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90, fontsize="small")
    ax.set_yticks(range(n), classes, fontsize="small")
    if n <= 30:
        peak = max(map(max, matrix)) or 1
        for r in range(n):
            for c in range(n):
                ax.text(c, r, str(matrix[r][c]), ha="center", va="center", fontsize="x-small",
                        color="white" if matrix[r][c] > peak / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
