"""One evaluation of a model on a resident image set: loss, confusion matrix, top-5, and the
figures practitioners read, all from the confusion matrix (no Ray, no files).

Each rank counts its share of the set on the device (the loss sum, a ``C x C`` confusion matrix
of true class x predicted class, the top-5 hits); one all-reduce sums them, one host read follows.
From the summed matrix ``M`` (``n_c`` = row sums, the images of class ``c``):

- ``acc``: 100 · trace(M) / n
- ``class_acc``: 100 · M[c, c] / n_c per class (NaN for a class with no image in the set)
- ``balanced_acc``: the mean of ``class_acc`` over the classes present
- ``macro_f1``: 100 · the mean over the classes present of 2·M[c,c] / (n_c + predicted_c)
  (scikit-learn's ``f1_score(average="macro")`` over those classes; an F1 of 0 where a class is
  never predicted right)
- ``top5_acc``: 100 · the share of images whose class is among the 5 highest logits (only with
  more than 5 classes: with 5 or fewer it is always 100)
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

# the per-class figures kept only on the last evaluation's record row (a row per class per eval
# would grow the record by C or C² numbers an evaluation)
LAST_ONLY = ("class_acc", "confusion")
TOP_K = 5


@torch.no_grad()
def evaluate_model(model: nn.Module, images: Any, num_classes: int, batch_size: int, collective: Any,
                   autocast: Any) -> dict[str, Any]:
    """The figures of :mod:`this module <.evaluation>` for ``model`` on ``images`` (an
    :class:`~fixmatch_ray.data.batched.EvalImages`)."""
    model.eval()
    device = images.y.device
    loss_sum = torch.zeros((), device=device)
    confusion = torch.zeros(num_classes * num_classes, device=device, dtype=torch.float64)
    top5 = torch.zeros((), device=device, dtype=torch.float64)
    k = min(TOP_K, num_classes)
    for xb, yb in images.batches(batch_size, collective.rank, collective.world_size):
        with autocast():
            logits = model(xb.contiguous(memory_format=torch.channels_last)).float()
        loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum")
        confusion += torch.bincount(yb * num_classes + logits.argmax(1), minlength=num_classes**2).double()
        top5 += (logits.topk(k, dim=1).indices == yb[:, None]).any(1).sum().double()
    # float64 carries the float32 loss sum and the counts exactly
    totals = collective.all_reduce(torch.cat([loss_sum.double()[None], top5[None], confusion]), "sum").tolist()
    matrix = [[int(v) for v in totals[2 + r * num_classes: 2 + (r + 1) * num_classes]] for r in range(num_classes)]
    return figures(matrix, totals[0], totals[1])


def figures(confusion: list[list[int]], loss_sum: float, top5_hits: float) -> dict[str, Any]:
    """The scalar and per-class figures of a summed confusion matrix (rows: true class)."""
    c = len(confusion)
    n = sum(map(sum, confusion))
    true = [sum(row) for row in confusion]
    predicted = [sum(confusion[r][j] for r in range(c)) for j in range(c)]
    present = [j for j in range(c) if true[j]]
    class_acc = [100.0 * confusion[j][j] / true[j] if true[j] else math.nan for j in range(c)]
    f1 = [200.0 * confusion[j][j] / (true[j] + predicted[j]) for j in present]
    out = {"loss": loss_sum / n, "acc": 100.0 * sum(confusion[j][j] for j in range(c)) / n,
           "balanced_acc": sum(class_acc[j] for j in present) / len(present),
           "macro_f1": sum(f1) / len(f1), "class_acc": class_acc, "confusion": confusion}
    if c > TOP_K:
        out["top5_acc"] = 100.0 * top5_hits / n
    return out


def record_figures(prefix: str, ev: dict[str, Any]) -> dict[str, Any]:
    """``ev``'s figures as record keys: ``<prefix>_acc``, ``<prefix>_macro_f1``..."""
    return {f"{prefix}_{k}": v for k, v in ev.items()}


def strip_last_only(row: dict[str, Any]) -> None:
    """Drop the per-class figures from a record row that is no longer the last one."""
    for key in [k for k in row if k.endswith(tuple(f"_{name}" for name in LAST_ONLY))]:
        del row[key]
