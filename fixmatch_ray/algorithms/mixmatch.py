"""MixMatch (Berthelot et al., 2019) as the official ``mixmatch.py`` of google-research/fixmatch runs it.

Per step (``mixmatch.py:69-127``): ``nu`` weak views of each unlabeled image, each through the
network on its own (batch statistics, BatchNorm's running statistics untouched); the label guess is
the mean softmax over the views, sharpened with T = 0.5; MixUp (Beta(β, β), ``λ' = max(λ, 1 − λ)``)
over the joined labeled + unlabeled batch against one permutation of it (``MixMode('xxy.yxy')``);
the mixed batches are interleaved (``layers.interleave``) so each network call sees rows of every
batch, and only the first call updates BatchNorm's running statistics; cross-entropy on the mixed
labeled rows plus ``w_match`` times the squared error on the unlabeled ones (mean over samples and
classes), ``w_match`` ramped linearly over ``warmup_kimg`` thousand images.

Its unlabeled batch is B images (``y_in`` is ``[batch, nu]``): the official run is ``mu: 1``; with a
larger μ the joined batch goes through the network in chunks of B, interleaved alike. The CTA variant
(``cta/cta_mixmatch.py``: lr 0.002, wd 0.02, β 0.75) is these options with the run's policy set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config.cli import opt
from ..config.strict import Options, require
from .base import Algorithm, Collective, Context, Forward, StepInput, Views, register
from .mixing import interleave, l2_consistency, mixup, sharpen, soft_cross_entropy
from .ramps import linear_warmup


def kimg_steps(kimg: float, batch_size: int) -> int:
    """Steps of ``batch_size`` labeled images in ``kimg`` thousand (1024) images: the official
    step counter counts images (``self.step`` grows by the batch each step)."""
    return int(kimg * 1024) // max(1, batch_size)


class MixUpDraws:
    """The MixUp randomness of a step: Beta(β, β) weights and a permutation, from a NumPy generator
    seeded by the run's seed (the official ``np.random.beta`` and ``tf.random_shuffle``). Each rank
    draws for every rank's rows and keeps its own: the generator stays the same on every rank."""

    def __init__(self, seed: int, stream: str):
        self.rng = np.random.default_rng([seed, *stream.encode()])

    def __call__(self, n: int, beta: float, collective: Collective, device: torch.device) -> tuple[Tensor, Tensor]:
        world, rank = collective.world_size, collective.rank
        lam = self.rng.beta(beta, beta, world * n).astype(np.float32)[rank * n:(rank + 1) * n]
        perms = [self.rng.permutation(n) for _ in range(world)]
        return torch.from_numpy(lam).to(device), torch.from_numpy(perms[rank]).to(device)

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]


def batch_rows(batch: StepInput) -> int:
    """The labeled batch size B (each unlabeled view has μB rows: the official runs have μ = 1)."""
    return len(batch.x_lb[0])


def interleaved_logits(forward: Forward, batches: list[Tensor], bn_call: int) -> list[Tensor]:
    """The network's logits of each of ``batches`` after the official interleave, de-interleaved:
    one call per interleaved batch, only call ``bn_call`` updating BatchNorm's running statistics
    (MixMatch: the first, ``mixmatch.py:99-104``; ReMixMatch: the last, ``remixmatch_no_cta.py:133-136``)."""
    mixed = interleave(batches)  # equal chunks of B rows
    n = len(mixed)
    logits = [forward(b, update_bn=i == bn_call % n) for i, b in enumerate(mixed)]
    return interleave(logits)


@dataclass(frozen=True)
class MixMatchOptions(Options):
    nu: int = opt(2, "MixMatch: weak views per unlabeled image (default 2)")
    T: float = opt(0.5, "MixMatch: sharpening temperature of the label guess (default 0.5)", flag="--T")
    beta: float = opt(0.5, "MixUp Beta(beta, beta) (default 0.5; CTA variant 0.75)")
    w_match: float = opt(100.0, "MixMatch: weight of the squared-error unlabeled loss (default 100)")
    warmup_kimg: float = opt(1024.0, "thousand images over which the unlabeled weight ramps up linearly (default 1024)")

    def check(self) -> None:
        require(self.nu >= 1, f"nu: must be >= 1, got {self.nu}")
        require(self.T > 0, f"T: must be > 0, got {self.T}")
        require(self.beta > 0, f"beta: must be > 0, got {self.beta}")
        require(self.w_match >= 0, f"w_match: must be >= 0, got {self.w_match}")
        require(self.warmup_kimg >= 0, f"warmup_kimg: must be >= 0, got {self.warmup_kimg}")


@register
class MixMatch(Algorithm):
    """Label guessing over ``nu`` weak views, sharpening, MixUp and the official interleave."""

    name = "mixmatch"
    Options = MixMatchOptions
    metrics = ("loss", "loss_x", "loss_u", "w_match")
    mu = 1  # the official unlabeled ratio: B images per view (the run config's mu where it reads it)

    @classmethod
    def views(cls, options: MixMatchOptions) -> Views:
        return Views(labeled=("weak",), unlabeled=("weak",) * options.nu)

    def __init__(self, options: MixMatchOptions, context: Context):
        super().__init__(options, context)
        self.draws = MixUpDraws(context.seed, self.name)
        self.warmup_steps = kimg_steps(options.warmup_kimg, context.batch_size)

    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.options
        n = batch_rows(batch)
        x_lb, views = batch.x_lb[0], list(batch.x_ulb)
        with torch.no_grad():  # the guess: each view on its own, no BatchNorm update (mixmatch.py:57-67)
            p = torch.stack([torch.softmax(forward(v, update_bn=False).float(), dim=-1) for v in views]).mean(0)
            guess = sharpen(p, o.T)
        labels = torch.cat([F.one_hot(batch.y_lb, self.num_classes).float(), *([guess] * len(views))])
        lam, index = self.draws(len(labels), o.beta, collective, x_lb.device)
        xm, lm = mixup(torch.cat([x_lb, *views]), labels, lam, index)
        logits = interleaved_logits(forward, list(xm.split(n)), bn_call=0)
        loss_x = soft_cross_entropy(logits[0], lm[:n])
        loss_u = l2_consistency(lm[n:], torch.cat(logits[1:]))
        w = o.w_match * linear_warmup(batch.step, self.warmup_steps)
        loss = loss_x + w * loss_u
        metrics = {"loss": loss, "loss_x": loss_x, "loss_u": loss_u, "w_match": torch.tensor(w, device=loss.device)}
        return loss, {k: v.detach() for k, v in metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"mixup": self.draws.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.draws.load_state_dict(state["mixup"])
