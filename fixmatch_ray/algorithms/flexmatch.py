"""FlexMatch: Curriculum Pseudo Labeling (Zhang et al., NeurIPS 2021).

FixMatch with a per-class threshold ``τ·M(β_c)``: ``β_c`` is the class's learning effect, the
number of unlabeled samples whose latest confident (``≥ τ``) prediction was ``c``, normalised by
the largest class count — or, with threshold warm-up, by the count of still-unused samples when
that is larger. Behaviour follows the authors' code, USB ``semilearn/algorithms/flexmatch``
(``FlexMatch.train_step``, ``FlexMatchThresholdingHook.masking``/``update``) and TorchSSL
``models/flexmatch`` (``consistency_loss``):

- the mask of step t uses ``β`` from the labels selected up to step t-1; the step's confident
  samples then update ``selected_label`` and ``β`` is recomputed (``masking`` then ``update``);
- ``β`` is left unchanged while a single bucket (unused, or one class) holds every sample
  (``update``'s ``max(counter) < ulb_dest_len`` guard), so it stays 0 — threshold 0 — at start;
- hard pseudo-labels; the unlabeled loss is averaged over all μB samples (``consistency_loss``).

Deviations, each deliberate:

- Under DDP the authors' hook updates each rank's ``selected_label`` with that rank's slice only,
  so the ranks' states drift apart. Here every rank gathers ``(idx, argmax, confident)`` from all
  ranks before the update and applies the same one: state identical on all ranks, and equal to
  one process running the whole batch.
- ``selected_label[idx[sel]] = argmax[sel]`` with an index twice in one step (possible with a
  small unlabeled set) is undefined on CUDA; here the last occurrence in (rank, batch) order
  wins, on every device — what the reference does on CPU.
- Probabilities are ``softmax(logits / T)`` as in this project's FixMatch; the authors take a plain
  softmax (with hard labels their ``T`` is unused). Identical at the default ``T = 1``.
- Counting uses ``scatter_add_`` on the device instead of ``Counter(selected_label.tolist())``: no
  host sync; the quotient is formed in float64 and stored as float32, like the reference's.

Options: FixMatch's τ, λu, T and anchoring, plus ``flex_warmup`` (default True, the authors'
default) and ``flex_mapping``: ``convex`` ``x/(2-x)`` (the authors' default), ``linear``
``(x+1)/2`` or ``concave`` ``(ln(x+1)+0.5)/(ln 2+0.5)`` — the three mappings of the paper's
ablation. The loss is FixMatch's (:func:`.losses.consistency_loss`) under the per-class mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..config.cli import opt
from ..config.strict import require
from .base import Algorithm, Collective, Context, Forward, StepInput, Views, register
from .fixmatch import ConfidenceOptions, forward_views
from .losses import consistency_loss, sharpened

MAPPINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "convex": lambda b: b / (2.0 - b),
    "linear": lambda b: (b + 1.0) / 2.0,
    "concave": lambda b: (torch.log(b + 1.0) + 0.5) / (math.log(2) + 0.5),
}


def learning_effect(selected_label: Tensor, num_classes: int, warmup: bool,
                    previous: Tensor) -> Tensor:
    """``β_c`` per class from ``selected_label`` (-1: not yet selected), without host sync.

    ``previous`` is returned unchanged while one bucket (unused or a single class) holds every
    sample, as the reference's ``update`` skips then.
    """
    # [unused, class 0, class 1, ...]; not bincount, whose CUDA kernel reads the max to the host.
    counts = torch.zeros(num_classes + 1, dtype=torch.long, device=selected_label.device)
    counts.scatter_add_(0, selected_label + 1, torch.ones_like(selected_label))
    per_class = counts[1:]
    denom = counts.max() if warmup else per_class.max()
    beta = (per_class.double() / denom.clamp(min=1).double()).to(previous.dtype)
    return torch.where(counts.max() < len(selected_label), beta, previous)


def update_selected(selected_label: Tensor, idx: Tensor, pseudo: Tensor, confident: Tensor) -> Tensor:
    """``selected_label`` with ``selected_label[idx[i]] = pseudo[i]`` for every confident ``i``;
    for an index present twice the last confident occurrence wins. A new tensor, no host sync."""
    position = torch.arange(len(idx), device=idx.device)
    last = torch.full_like(selected_label, -1).scatter_reduce(
        0, idx, torch.where(confident, position, -1), reduce="amax")
    return torch.where(last >= 0, pseudo[last.clamp(min=0)], selected_label)


@dataclass(frozen=True)
class FlexMatchOptions(ConfidenceOptions):
    flex_warmup: bool = opt(True, "FlexMatch: threshold warm-up (default on)", action="bool")
    flex_mapping: str = opt("convex", "FlexMatch: mapping of the learning effect (default convex)",
                            choices=tuple(MAPPINGS))

    def check(self) -> None:
        super().check()
        require(self.flex_mapping in MAPPINGS,
                f"flex_mapping: unknown {self.flex_mapping!r}; expected one of {', '.join(MAPPINGS)}")


@register
class FlexMatch(Algorithm):
    """Curriculum pseudo-labelling: flexible per-class thresholds, state per unlabeled sample."""

    name = "flexmatch"
    Options = FlexMatchOptions
    metrics = ("loss", "loss_x", "loss_u", "mask", "threshold")

    @classmethod
    def views(cls, options: FlexMatchOptions) -> Views:
        return options.views()

    def __init__(self, options: FlexMatchOptions, context: Context):
        super().__init__(options, context)
        self.warmup, self.mapping = options.flex_warmup, MAPPINGS[options.flex_mapping]
        self.selected_label = torch.full((self.num_unlabeled,), -1, dtype=torch.long, device=self.device)
        self.classwise_acc = torch.zeros(self.num_classes, dtype=torch.float32, device=self.device)

    def thresholds(self) -> Tensor:
        """The per-class thresholds ``τ·M(β_c)`` the next step will use."""
        return self.options.threshold * self.mapping(self.classwise_acc)

    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.options
        logits_lb, logits_w, logits_s = forward_views(forward, batch)
        with torch.no_grad():
            max_probs, pseudo = sharpened(logits_w, o.T)
            thresholds = self.thresholds()
            mask = max_probs.ge(thresholds[pseudo]).to(max_probs.dtype)
            confident = max_probs.ge(o.threshold)
            self._update(batch.idx_ulb, pseudo, confident, collective)
        out = consistency_loss(logits_lb, batch.y_lb, logits_s, pseudo, mask, lambda_u=o.lambda_u)
        # threshold: the class mean of the τ·M(β_c) this step used; the same on every rank.
        metrics = {"loss": out.loss, "loss_x": out.loss_x, "loss_u": out.loss_u, "mask": out.mask,
                   "threshold": thresholds.mean()}
        return out.loss, {k: v.detach() for k, v in metrics.items()}

    def _update(self, idx: Tensor, pseudo: Tensor, confident: Tensor, collective: Collective) -> None:
        # One gather of a (n, 3) long tensor (the confidence test is done locally, so max_prob
        # need not travel): every rank then applies the same, whole-batch update.
        local = torch.stack([idx.to(torch.long), pseudo, confident.to(torch.long)], dim=1)
        every = collective.all_gather(local)
        self.selected_label = update_selected(self.selected_label, every[:, 0], every[:, 1],
                                              every[:, 2].bool())
        self.classwise_acc = learning_effect(self.selected_label, self.num_classes, self.warmup,
                                             self.classwise_acc)

    def state_dict(self) -> dict[str, Any]:
        return {"selected_label": self.selected_label.clone(), "classwise_acc": self.classwise_acc.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        selected, acc = state["selected_label"], state["classwise_acc"]
        if selected.shape != self.selected_label.shape or acc.shape != self.classwise_acc.shape:
            raise ValueError(
                f"flexmatch state is for {len(selected)} unlabeled samples and {len(acc)} classes, "
                f"this run has {self.num_unlabeled} and {self.num_classes}")
        self.selected_label = selected.to(self.device, torch.long).clone()
        self.classwise_acc = acc.to(self.device, torch.float32).clone()
