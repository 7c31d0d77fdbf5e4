"""Entropy minimisation (Grandvalet & Bengio, 2005) as a fixmatch_ray algorithm plugin.

Cross-entropy on the labeled images plus ``entropy_weight`` times the mean prediction entropy of
the unlabeled ones. One view of each image (the unlabeled one weak or strong, by an option); two
calls of the network per step, the unlabeled one leaving BatchNorm's running statistics to the
labeled call.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from fixmatch_ray.algorithms import Algorithm, Views
from fixmatch_ray.config.cli import opt
from fixmatch_ray.config.strict import Options, require


@dataclass(frozen=True)
class EntMinOptions(Options):
    entropy_weight: float = opt(0.1, "weight of the unlabeled entropy term (default 0.1)")
    unlabeled_view: str = opt("weak", "view of an unlabeled image: weak (default) or strong",
                              choices=("weak", "strong"))

    def check(self) -> None:
        require(self.entropy_weight >= 0, f"entropy_weight: must be >= 0, got {self.entropy_weight}")
        require(self.unlabeled_view in ("weak", "strong"),
                f"unlabeled_view: expected weak or strong, got {self.unlabeled_view!r}")


class EntMin(Algorithm):
    name = "entmin"
    Options = EntMinOptions
    metrics = ("total", "ce", "entropy")  # shown as train_total, train_ce, train_entropy

    @classmethod
    def views(cls, options: EntMinOptions) -> Views:
        return Views(labeled=("weak",), unlabeled=(options.unlabeled_view,))

    def train_step(self, forward, batch, collective):
        (x_lb,), (x_ulb,) = batch.x_lb, batch.x_ulb
        ce = F.cross_entropy(forward(x_lb), batch.y_lb)
        log_p = F.log_softmax(forward(x_ulb, update_bn=False), dim=-1)
        entropy = -(log_p.exp() * log_p).sum(dim=-1).mean()
        total = ce + self.options.entropy_weight * entropy
        return total, {"total": total.detach(), "ce": ce.detach(), "entropy": entropy.detach()}
