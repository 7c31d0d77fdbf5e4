"""ReMixMatch (Berthelot et al., 2020) as ``remixmatch_no_cta.py`` and ``cta/cta_remixmatch.py`` of
google-research/fixmatch run it.

Per step (``remixmatch_no_cta.py:62-170``), of each unlabeled image one weak anchor and ``K``
strong views (the run's policy; CTAugment for the CTA variant, whose labeled view is a CTA view too):

- rotation: the first strong view, its quarters turned by 0/180/90/270° (:func:`.mixing.rotate_quarters`),
  through the network and a 4-way head on its pooled features, cross-entropy weighted ``w_rot``;
- the guess: logits of the views, each on its own network call (BatchNorm not updated), picked by
  ``redux`` (``swap``: view i's target from view i+1's softmax; ``1st``: every view's from the
  weak anchor's; ``mean``), aligned to the labeled class distribution over a 128-batch moving
  average of the model's predictions (``use_dm``), sharpened with T;
- the pre-MixUp KL term: cross-entropy of the first strong view against the first target, ``w_kl``;
- MixUp (β) over labeled + all views, the official interleave with only the *last* call updating
  BatchNorm; cross-entropy on the labeled rows plus ``w_match`` times cross-entropy (``use_xe``)
  or squared error on the unlabeled ones; ``w_match`` and ``w_kl`` ramped over ``warmup_kimg``.

``p_data`` is the official estimate: with no class distribution given (the official datasets give
none), a running average (decay 0.999) of the labeled batches' one-hot labels from uniform
(``layers.py:143-164``); ``p_data: labeled`` uses the labeled split's class frequencies instead.
The unlabeled batch is B images per view: the official run is ``mu: 1`` (a larger μ goes through the
network in interleaved chunks of B, and each view's targets are that view's μB rows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config.cli import opt
from ..config.strict import Options, require
from .base import Algorithm, Collective, Context, Forward, StepInput, Views, register
from .mixing import MovingAverage, align, l2_consistency, mixup, rotate_quarters, sharpen, soft_cross_entropy
from .mixmatch import MixUpDraws, batch_rows, interleaved_logits, kimg_steps
from .ramps import linear_warmup

REDUX = ("swap", "mean", "1st")  # remixmatch_no_cta.py:219
P_DATA = ("running", "labeled")
P_DATA_DECAY = 0.999  # layers.PData.update
ROTATION = "rotation"


@dataclass(frozen=True)
class ReMixMatchOptions(Options):
    K: int = opt(8, "ReMixMatch: strong views per unlabeled image (default 8; the authors use 1 at 40 labels)", flag="--K")
    beta: float = opt(0.75, "MixUp Beta(beta, beta) (default 0.75)")
    T: float = opt(0.5, "ReMixMatch: sharpening temperature (default 0.5)", flag="--T")
    w_kl: float = opt(0.5, "ReMixMatch: weight of the pre-MixUp KL loss (default 0.5)")
    w_match: float = opt(1.5, "ReMixMatch: weight of the unlabeled MixUp loss (default 1.5)")
    w_rot: float = opt(0.5, "ReMixMatch: weight of the rotation loss (default 0.5)")
    warmup_kimg: float = opt(1024.0, "thousand images over which the unlabeled weights ramp up (default 1024)")
    redux: str = opt("1st", "ReMixMatch: logit selection of the guess (default 1st, the CTA script's; "
                     "swap: remixmatch_no_cta)", choices=REDUX)
    use_dm: bool = opt(True, "ReMixMatch: distribution alignment (default on)", action="bool")
    use_xe: bool = opt(True, "ReMixMatch: cross-entropy (default) or squared error for the MixUp loss", action="bool")
    p_data: str = opt("running", "ReMixMatch: the class distribution aligned to (default running, the official "
                      "average of labeled batches; labeled: the split's frequencies)", choices=P_DATA)
    dbuf: int = opt(128, "ReMixMatch: batches in the moving average of predictions (default 128)")
    labeled_view: str = opt("strong", "ReMixMatch: the labeled image's view (default strong: the CTA "
                            "script's pool augments it; weak for remixmatch_no_cta)", choices=("weak", "strong"))

    def check(self) -> None:
        require(self.K >= 1, f"K: must be >= 1, got {self.K}")
        for name in ("beta", "T"):
            require(getattr(self, name) > 0, f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("w_kl", "w_match", "w_rot", "warmup_kimg"):
            require(getattr(self, name) >= 0, f"{name}: must be >= 0, got {getattr(self, name)}")
        require(self.redux in REDUX, f"redux: unknown {self.redux!r}; expected one of {', '.join(REDUX)}")
        require(self.p_data in P_DATA, f"p_data: unknown {self.p_data!r}; expected one of {', '.join(P_DATA)}")
        require(self.dbuf >= 1, f"dbuf: must be >= 1, got {self.dbuf}")
        require(self.labeled_view in ("weak", "strong"), f"labeled_view: expected weak or strong, got {self.labeled_view!r}")


def guess_probs(logits_y: list[Tensor], redux: str) -> Tensor:
    """The model's class probabilities behind each view's target, stacked view by view
    (``remixmatch_no_cta.py:36-47``)."""
    k = len(logits_y)
    if redux == "swap":
        return torch.cat([torch.softmax(x.float(), dim=-1) for x in logits_y[1:] + logits_y[:1]])
    if redux == "mean":
        return (sum(torch.softmax(x.float(), dim=-1) for x in logits_y) / k).repeat(k, 1)
    return torch.softmax(logits_y[0].float(), dim=-1).repeat(k, 1)


@register
class ReMixMatch(Algorithm):
    """Distribution alignment, augmentation anchoring, MixUp, the KL and rotation terms."""

    name = "remixmatch"
    Options = ReMixMatchOptions
    metrics = ("loss", "loss_x", "loss_u", "loss_kl", "loss_rot", "w_match")
    mu = 1  # the official unlabeled ratio: B images per view (the run config's mu where it reads it)

    @classmethod
    def views(cls, options: ReMixMatchOptions) -> Views:
        return Views(labeled=(options.labeled_view,), unlabeled=("weak",) + ("strong",) * options.K)

    @classmethod
    def heads(cls, options: ReMixMatchOptions) -> dict[str, int]:
        return {ROTATION: 4} if options.w_rot > 0 else {}

    def __init__(self, options: ReMixMatchOptions, context: Context):
        super().__init__(options, context)
        c, dev = self.num_classes, self.device
        self.draws = MixUpDraws(context.seed, self.name)
        self.warmup_steps = kimg_steps(options.warmup_kimg, context.batch_size)
        self.p_model = MovingAverage(c, options.dbuf, dev)
        if options.p_data == "labeled" and context.labeled_distribution is not None:
            self.p_data = torch.tensor(context.labeled_distribution, dtype=torch.float32, device=dev)
        else:
            self.p_data = torch.full((c,), 1.0 / c, device=dev)

    def _view_logits(self, forward: Forward, views: list[Tensor]) -> list[Tensor]:
        """Logits of the views the guess and the KL term read (``remixmatch_no_cta.py:106-112``)."""
        o, k1 = self.options, len(views)
        if o.redux == "1st" and o.w_kl <= 0:
            with torch.no_grad():
                return [forward(views[0], update_bn=False)] * k1
        if o.redux == "1st":
            pair = [forward(v, update_bn=False) for v in views[:2]]
            return pair + pair[:1] * (k1 - 2)
        return [forward(v, update_bn=False) for v in views]

    def train_step(self, forward: Forward, batch: StepInput,
                   collective: Collective) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.options
        n = batch_rows(batch)
        x_lb, views = batch.x_lb[0], list(batch.x_ulb)
        zero = torch.zeros((), device=x_lb.device)
        loss_rot = zero
        if o.w_rot > 0:
            rot_x, rot_y = rotate_quarters(views[1])
            loss_rot = F.cross_entropy(forward(rot_x, update_bn=False, head=ROTATION).float(), rot_y)
        logits_y = self._view_logits(forward, views)
        with torch.no_grad():
            p_model_y = guess_probs(logits_y, o.redux)
            p = align(p_model_y, self.p_data / self.p_data.sum(), self.p_model()) if o.use_dm else p_model_y
            targets = sharpen(p, o.T)
        ramp = linear_warmup(batch.step, self.warmup_steps)
        # the first strong view against the first view's targets (ly[:batch]; the anchor's under 1st)
        loss_kl = soft_cross_entropy(logits_y[1], targets[:len(views[0])]) if o.w_kl > 0 else zero
        lx = F.one_hot(batch.y_lb, self.num_classes).float()
        labels = torch.cat([lx, targets])
        lam, index = self.draws(len(labels), o.beta, collective, x_lb.device)
        xm, lm = mixup(torch.cat([x_lb, *views]), labels, lam, index)
        logits = interleaved_logits(forward, list(xm.split(n)), bn_call=-1)
        loss_x = soft_cross_entropy(logits[0], lm[:n])
        logits_u = torch.cat(logits[1:])
        loss_u = soft_cross_entropy(logits_u, lm[n:]) if o.use_xe else l2_consistency(lm[n:], logits_u)
        loss = loss_x + o.w_kl * ramp * loss_kl + o.w_match * ramp * loss_u + o.w_rot * loss_rot
        self._update(p_model_y, lx, collective)
        metrics = {"loss": loss, "loss_x": loss_x, "loss_u": loss_u, "loss_kl": loss_kl, "loss_rot": loss_rot,
                   "w_match": torch.tensor(o.w_match * ramp, device=loss.device)}
        return loss, {k: v.detach() for k, v in metrics.items()}

    def _update(self, p_model_y: Tensor, lx: Tensor, collective: Collective) -> None:
        """The moving averages after the step, the same on every rank: batch means averaged over
        ranks (the official variables aggregate with MEAN across replicas)."""
        world = collective.world_size
        means = collective.all_reduce(torch.cat([p_model_y.mean(0), lx.mean(0)]), "sum") / world
        c = self.num_classes
        self.p_model.update(means[:c])
        if self.options.p_data == "running":
            self.p_data = self.p_data * P_DATA_DECAY + means[c:] * (1 - P_DATA_DECAY)

    def state_dict(self) -> dict[str, Any]:
        return {"mixup": self.draws.state_dict(), "p_model": self.p_model.buffer.clone(), "p_data": self.p_data.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["p_model"].shape) != tuple(self.p_model.buffer.shape):
            raise ValueError(f"remixmatch state holds a {tuple(state['p_model'].shape)} moving average, this run "
                             f"needs {tuple(self.p_model.buffer.shape)} (dbuf, classes)")
        self.draws.load_state_dict(state["mixup"])
        self.p_model.buffer = state["p_model"].to(self.device, torch.float32).clone()
        self.p_data = state["p_data"].to(self.device, torch.float32).clone()
