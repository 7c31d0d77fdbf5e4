"""The FixMatch training loop: one step, evaluation, and the eval-epoch loop.

Device-agnostic (CPU here, CUDA when present) and free of Ray, files and writers: the caller
passes callbacks for what happens after each eval epoch (checkpoint, TensorBoard, Ray report).
Per-step metrics stay on the device and are read once per check interval, so a step has no
host synchronisation.
"""
from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..config import RunConfig
from ..errors import NonFiniteLossError
from ..fixmatch import FixMatchLoss, fixmatch_loss
from ..models import build_model
from .optim import ModelEMA, build_optimizer, lr_at, set_lr

MEDIAN_OF_LAST = 20  # the paper's number: median test accuracy of the last 20 evaluations


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``mode``: ``auto`` is bf16 where supported, fp16 on older GPUs."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


@dataclass
class Batch:
    x_lb: torch.Tensor
    y_lb: torch.Tensor
    x_ulb_w: torch.Tensor
    x_ulb_s: torch.Tensor


class Trainer:
    """Model, EMA, optimiser and grad scaler of one run, and the step counter."""

    def __init__(
        self,
        cfg: RunConfig,
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
    ):
        self.cfg, self.device = cfg, device
        # The initial weights depend on the seed only, without touching the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = build_model(cfg.arch, cfg.num_classes, cfg.depth, cfg.width, cfg.cardinality,
                              bn_momentum=cfg.bn_momentum)
        self.net = net.to(device, memory_format=torch.channels_last)
        self.model = wrap(self.net) if wrap else self.net  # e.g. DistributedDataParallel
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.ema = ModelEMA(self.net, cfg.ema_decay) if cfg.use_ema else None
        self.optimizer = build_optimizer(self.net, cfg.lr, cfg.wdecay, cfg.momentum, cfg.nesterov)
        self.dtype = amp_dtype(cfg.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.step = 0
        self.history: list[dict[str, Any]] = []

    # -- one optimisation step ---------------------------------------------------------------
    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def train_step(self, batch: Batch) -> FixMatchLoss:
        """One FixMatch step: a single forward over labeled, weak and strong views together."""
        cfg = self.cfg
        set_lr(self.optimizer, lr_at(self.step, cfg.lr, cfg.total_steps, int(cfg.warmup)))
        n_lb, n_ulb = len(batch.x_lb), len(batch.x_ulb_w)
        x = torch.cat([batch.x_lb, batch.x_ulb_w, batch.x_ulb_s]).to(
            self.device, non_blocking=True, memory_format=torch.channels_last
        )
        y_lb = batch.y_lb.to(self.device, non_blocking=True)
        self.model.train()
        with self.autocast():
            logits = self.model(x)
        logits_lb, logits_w, logits_s = logits.split([n_lb, n_ulb, n_ulb])
        out = fixmatch_loss(
            logits_lb, y_lb, logits_w, logits_s, lambda_u=cfg.lambda_u, T=cfg.T, threshold=cfg.threshold
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.net)
        self.step += 1
        return out

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, use_ema: bool = True) -> dict[str, float]:
        """Mean cross-entropy and top-1 accuracy (%) on ``(x, y)`` of the EMA (or raw) model."""
        model = self.ema.module if (use_ema and self.ema is not None) else self.net
        model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for xb, yb in zip(x.split(self.cfg.eval_batch_size), y.split(self.cfg.eval_batch_size)):
            xb = xb.to(self.device, non_blocking=True, memory_format=torch.channels_last)
            yb = yb.to(self.device, non_blocking=True)
            with self.autocast():
                logits = model(xb).float()
            loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
        n = len(y)
        return {"loss": loss_sum.item() / n, "acc": 100.0 * correct.item() / n}

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": list(self.history),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def summarize(history: list[dict[str, Any]]) -> dict[str, float]:
    """Per-run numbers: the paper's median of the last 20 evals, best and last accuracy."""
    accs = [h["test_acc"] for h in history]
    if not accs:
        return {}
    return {
        "median20_acc": statistics.median(accs[-MEDIAN_OF_LAST:]),
        "best_acc": max(accs),
        "last_acc": accs[-1],
        "evals": len(accs),
    }


def fit(
    trainer: Trainer,
    batches: Iterator[dict[str, torch.Tensor]],
    test: tuple[torch.Tensor, torch.Tensor],
    on_epoch: Callable[[dict[str, Any]], None] = lambda record: None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    check_every: int = 50,
    all_reduce: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Train until ``total_steps``, evaluating every ``eval_step`` steps (and at the end).

    After each evaluation ``on_epoch(record)`` receives the epoch's record (also appended to
    ``trainer.history``). ``progress(steps_done, running_means)`` is called every
    ``check_every`` steps, where the loss is also checked for NaN/inf. Under DDP,
    ``all_reduce(tensor, op)`` (op ``"sum"`` or ``"max"``) combines the ranks' epoch sums and
    NaN flags, so every rank reports and stops alike.
    """
    cfg = trainer.cfg
    reduce = all_reduce or (lambda t, op: t)
    world = int(reduce(torch.ones((), device=trainer.device), "sum").item())
    while trainer.step < cfg.total_steps:
        start = trainer.step
        end = min((start // cfg.eval_step + 1) * cfg.eval_step, cfg.total_steps)
        sums = torch.zeros(4, device=trainer.device)  # loss, loss_x, loss_u, mask
        bad_step = torch.full((), -1, device=trainer.device, dtype=torch.long)
        tic = time.perf_counter()
        for _ in range(end - start):
            step = trainer.step
            batch = Batch(**{k: v for k, v in next(batches).items() if k != "y_ulb"})
            local_images = len(batch.x_lb) + len(batch.x_ulb_w) + len(batch.x_ulb_s)
            out = trainer.train_step(batch)
            terms = torch.stack([t.detach().float() for t in out])
            sums += terms
            first_bad = (bad_step < 0) & ~torch.isfinite(out.loss.detach())
            bad_step = torch.where(first_bad, torch.full_like(bad_step, step), bad_step)
            done = trainer.step - start
            if done % check_every == 0 or trainer.step == end:
                _raise_if_bad(reduce(bad_step.clone(), "max"))
                if progress is not None:
                    progress(trainer.step, dict(zip(("loss", "loss_x", "loss_u", "mask"), (sums / done).tolist())))
        seconds = time.perf_counter() - tic
        totals = reduce(torch.cat([sums, sums.new_tensor([local_images])]), "sum")
        means = (totals[:4] / (world * (end - start))).tolist()
        images_per_step = int(totals[4].item())  # the whole job's, summed over ranks
        record: dict[str, Any] = {
            "step": trainer.step,
            "epoch": len(trainer.history) + 1,
            "lr": lr_at(trainer.step - 1, cfg.lr, cfg.total_steps, int(cfg.warmup)),
            "train_loss": means[0],
            "train_loss_x": means[1],
            "train_loss_u": means[2],
            "mask_rate": means[3],
            "images_per_s": images_per_step * (end - start) / max(seconds, 1e-9),
            "samples_per_step": images_per_step,
        }
        ev = trainer.evaluate(*test, use_ema=True)
        record.update(test_acc=ev["acc"], test_loss=ev["loss"])
        if trainer.ema is not None:
            record["raw_test_acc"] = trainer.evaluate(*test, use_ema=False)["acc"]
        trainer.history.append(record)
        summary = summarize(trainer.history)
        record.update(median20_acc=summary["median20_acc"], best_acc=summary["best_acc"])
        on_epoch(record)
    return trainer.history


def _raise_if_bad(bad_step: torch.Tensor) -> None:
    step = int(bad_step.item())
    if step >= 0:
        raise NonFiniteLossError(
            f"loss became NaN/inf at step {step}: training diverged (try a lower --lr, or --amp off)"
        )
