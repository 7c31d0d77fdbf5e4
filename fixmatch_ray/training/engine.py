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
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..algorithms import ALGORITHMS, LOCAL, Collective, Context, StepInput, build_algorithm, metric_key
from ..config import RunConfig
from ..config.run import ADAM_BETAS, LINEAR_LR_END
from ..errors import NonFiniteLossError
from ..models import build_model
from .evaluation import evaluate_model, record_figures, strip_last_only
from .optim import ModelEMA, build_optimizer, lr_at, set_lr
from .precision import amp_dtype, precision_name, set_precision  # noqa: F401  (amp_dtype: the engine's API)

STEP_KEYS = ("x_lb", "y_lb", "x_ulb", "idx_ulb")  # what a step's batch must carry (x_*: one tensor per view)
MEDIAN_OF_LAST = 20  # the paper's number: median test accuracy of the last 20 evaluations


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def schedule_lr(cfg: RunConfig, step: int) -> float:
    """The run's learning rate at ``step``: its schedule (cosine, or the linear ablation)."""
    lr_end = LINEAR_LR_END if cfg.lr_end is None else cfg.lr_end
    return lr_at(step, cfg.lr, cfg.total_steps, int(cfg.warmup), schedule=cfg.lr_schedule, lr_end=lr_end)


class Engine:
    """Model, EMA, optimiser, grad scaler, the algorithm (and the augmentation policy, when it
    learns) of one run, and the step counter."""

    def __init__(
        self,
        cfg: RunConfig,
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        num_unlabeled: int = 0,
        collective: Collective = LOCAL,
        policy: Any = None,
        labeled_distribution: tuple[float, ...] | None = None,
    ):
        self.cfg, self.device, self.collective, self.policy = cfg, device, collective, policy
        # The initial weights depend on the seed only, without touching the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = build_model(cfg.arch, cfg.num_classes, cfg.depth, cfg.width, cfg.cardinality,
                              bn_momentum=cfg.bn_momentum, scales=cfg.scales,
                              heads=ALGORITHMS[cfg.algorithm].heads(cfg.options))
        self.net = net.to(device, memory_format=torch.channels_last)
        set_precision(cfg, device)
        if device.type == "cuda":  # fixed shapes every step: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
        self.model = wrap(self.net) if wrap else self.net  # e.g. DistributedDataParallel
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.ema = ModelEMA(self.net, cfg.ema_decay) if cfg.use_ema else None
        betas = tuple(d if v is None else v for v, d in zip((cfg.beta1, cfg.beta2), ADAM_BETAS))
        self.optimizer = build_optimizer(self.net, cfg.lr, cfg.wdecay, cfg.momentum, cfg.nesterov,
                                         cfg.optimizer, betas)
        self._batch_norms = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        context = Context(cfg.num_classes, num_unlabeled, device, cfg.total_steps, labeled_distribution,
                          seed=cfg.seed, batch_size=cfg.batch_size)
        self.algorithm = build_algorithm(cfg.algorithm, cfg.options, context)
        self.dtype = amp_dtype(cfg.amp, device)
        self.precision = precision_name(cfg, device, self.dtype)  # the run record's "precision"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.step = 0
        self.history: list[dict[str, Any]] = []

    # -- one optimisation step ---------------------------------------------------------------
    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _forward(self, x: torch.Tensor, *, update_bn: bool = True, head: str | None = None) -> torch.Tensor:
        """The algorithm's :class:`~fixmatch_ray.algorithms.Forward`: the model in training mode;
        ``update_bn=False`` leaves BatchNorm's running statistics as they were (the layers
        normalise with the batch's statistics either way); ``head`` picks an extra head's logits."""
        x = x.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        kw = {} if head is None else {"head": head}
        if update_bn:
            with self.autocast():
                return self.model(x, **kw)
        for bn in self._batch_norms:  # in training mode without tracking, BatchNorm passes no running buffers
            bn.track_running_stats = False
        try:
            with self.autocast():
                return self.model(x, **kw)
        finally:
            for bn in self._batch_norms:
                bn.track_running_stats = True

    def train_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step of the run's algorithm on this rank's slice of the step's batch; returns the
        loss and the algorithm's named metrics (0-dim tensors, still on the device)."""
        cfg = self.cfg
        set_lr(self.optimizer, schedule_lr(cfg, self.step))
        dev = {k: _to(batch[k], self.device) for k in STEP_KEYS}
        if "x_probe" in batch:
            self._probe(batch["x_probe"], dev["y_lb"], batch["probe"])
        self.model.train()
        ema_forward = self._ema_forward if self.ema is not None else None
        step_input = StepInput(**dev, step=self.step, ema_forward=ema_forward)
        loss, metrics = self.algorithm.train_step(self._forward, step_input, self.collective)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.net)
        self.step += 1
        return loss, metrics

    @torch.no_grad()
    def _ema_forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Logits of the EMA model (no gradient): eval mode (its BatchNorm statistics), or with
        ``train`` the batch's statistics (its running buffers move, but :meth:`ModelEMA.update`
        copies the model's over them after this step, so nothing of it stays)."""
        model = self.ema.module
        model.train(train)
        try:
            with self.autocast():
                return model(x.to(self.device, non_blocking=True, memory_format=torch.channels_last))
        finally:
            model.eval()

    @torch.no_grad()
    def _probe(self, x_probe: torch.Tensor, y_lb: torch.Tensor, probe: Any) -> None:
        """A learning policy's update (CTAugment): the EMA model classifies this rank's probes
        (before this step's update, as the official code's single session.run), every rank's
        probabilities and labels are gathered, and every rank applies the same update."""
        model = self.ema.module if self.ema is not None else self.net
        model.eval()
        with self.autocast():
            logits = model(x_probe.to(self.device, non_blocking=True, memory_format=torch.channels_last))
        probs = torch.softmax(logits.float(), dim=-1)
        self.policy.learn(probe, self.collective.all_gather(probs), self.collective.all_gather(y_lb))

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, test: Any, use_ema: bool = True) -> dict[str, Any]:
        """Loss, accuracy (%) and the other figures of :mod:`.evaluation` of the EMA (or raw)
        model on ``test`` (an :class:`~fixmatch_ray.data.batched.EvalImages`): each rank evaluates
        its share, the counts are all-reduced (one host read per evaluation)."""
        model = self.ema.module if (use_ema and self.ema is not None) else self.net
        return evaluate_model(model, test, self.cfg.num_classes, self.cfg.eval_batch_size, self.collective,
                              self.autocast)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "policy": self.policy.state_dict() if self.policy is not None else {},
            "history": list(self.history),
            # Nothing draws from the CUDA RNG (augmentation has its own keyed generators), so only
            # the CPU state is kept: restoring per-device states breaks on a node with fewer GPUs.
            "rng": {"torch": torch.get_rng_state()},
            "config": self.cfg.to_dict(),
            "precision": self.precision,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        # load_state_dict takes every hyper-parameter of the saved groups, the saved device's
        # fused/foreach kernels included (a CPU checkpoint would run foreach SGD on a GPU, which fails
        # under fp16's GradScaler): keep the ones build_optimizer chose for this device.
        kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, chosen in zip(self.optimizer.param_groups, kernels):
            group.update(chosen)
        # A scaler's state exists only under fp16; a run resumed on a card with another precision
        # (bf16 <-> fp16) starts a fresh scale instead of failing on an empty state.
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.algorithm.load_state_dict(state.get("algorithm", {}))
        if self.policy is not None:
            self.policy.load_state_dict(state.get("policy", {}))
        self.step = int(state["step"])
        self.history = list(state["history"])
        before = state.get("precision")
        if before and before != self.precision and self.step > 0:  # resumed on another device or card
            self.precision = f"{self.precision} (steps before {self.step}: {before})"
        torch.set_rng_state(state["rng"]["torch"])


def run_finished(step: int, total_steps: int) -> bool:
    """Whether a run at ``step`` has trained to its end: the one test of "finished" (the loop's
    end, the last checkpoint, the record's flag, the trackers' summary, a restore at the end)."""
    return step >= total_steps


def _to(x: torch.Tensor | list[torch.Tensor], device: torch.device) -> Any:
    """A tensor, or a tuple of them (one per view), on ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    return tuple(v.to(device, non_blocking=True) for v in x)


def summarize(history: list[dict[str, Any]]) -> dict[str, float]:
    """Per-run numbers: the paper's median of the last 20 evals, best and last accuracy. With a
    validation split nothing is chosen on the test set: ``best_acc`` is then the test accuracy at
    the (first) best validation evaluation, also ``test_at_best_val_acc``, beside ``best_val_acc``."""
    accs = [h["test_acc"] for h in history]
    if not accs:
        return {}
    out = {"median20_acc": statistics.median(accs[-MEDIAN_OF_LAST:]), "best_acc": max(accs),
           "last_acc": accs[-1], "evals": len(accs)}
    vals = [h.get("val_acc") for h in history]
    if all(v is not None for v in vals):
        best = max(range(len(vals)), key=lambda i: (vals[i], -i))
        out.update(best_acc=accs[best], test_at_best_val_acc=accs[best], best_val_acc=vals[best])
    return out


def fit(
    trainer: Engine,
    batches: Iterator[dict[str, torch.Tensor]],
    test: Any,
    on_epoch: Callable[[dict[str, Any]], None] = lambda record: None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    check_every: int = 50,
    val: Any = None,
) -> list[dict[str, Any]]:
    """Train until ``total_steps``, evaluating every ``eval_step`` steps (and at the end).

    After each evaluation ``on_epoch(record)`` receives the epoch's record (also appended to
    ``trainer.history``). ``progress(steps_done, running_means)`` is called every
    ``check_every`` steps, where the loss is also checked for NaN/inf. With ``val`` (a
    validation set) every evaluation records its figures too (``val_acc``...). Under DDP the trainer's
    collective combines the ranks' epoch sums and NaN flags, so every rank reports and stops alike.
    """
    cfg = trainer.cfg
    while not run_finished(trainer.step, cfg.total_steps):
        start = trainer.step
        end = min((start // cfg.eval_step + 1) * cfg.eval_step, cfg.total_steps)
        tic = time.perf_counter()
        names, sums, local_images = _train_epoch(trainer, batches, end, progress, check_every)
        record = _epoch_record(trainer, names, sums, local_images, end - start, time.perf_counter() - tic)
        record.update(record_figures("test", trainer.evaluate(test, use_ema=True)))
        if trainer.ema is not None:
            record["raw_test_acc"] = trainer.evaluate(test, use_ema=False)["acc"]
        if val is not None:  # model selection reads these, never the test figures
            record.update(record_figures("val", trainer.evaluate(val, use_ema=True)))
        if trainer.history:
            strip_last_only(trainer.history[-1])
        record["wall_time"] = time.time()  # when this evaluation ended (Unix seconds)
        trainer.history.append(record)
        summary = summarize(trainer.history)
        record.update(median20_acc=summary["median20_acc"], best_acc=summary["best_acc"])
        on_epoch(record)
    return trainer.history


class StepSums:
    """The per-step bookkeeping of an epoch, all on the device: the algorithm's metric sums, the
    first step whose loss was not finite (−1: none), and the images per step on this rank."""

    def __init__(self, device: torch.device, names: tuple[str, ...] = ()):
        self.names, self.checked = list(names), False  # the algorithm's declared metrics (else the first step's)
        self.sums = torch.zeros((), device=device)
        self.bad_step = torch.full((), -1, device=device, dtype=torch.long)
        self.images = 0

    def add(self, step: int, loss: torch.Tensor, metrics: dict[str, torch.Tensor]) -> None:
        if not self.checked:  # the keys are the same every step: looked at once
            self.names = self.names or list(metrics)
            if sorted(metrics) != sorted(self.names):
                raise ValueError(f"the algorithm's train_step returned metrics {sorted(metrics)}; it declares "
                                 f"metrics = {tuple(self.names)}")
            self.checked = True
        self.sums = self.sums + torch.stack([metrics[k].float() for k in self.names])
        first_bad = (self.bad_step < 0) & ~torch.isfinite(loss.detach())
        self.bad_step = torch.where(first_bad, torch.full_like(self.bad_step, step), self.bad_step)


def run_steps(trainer: Engine, batches: Iterator[dict[str, torch.Tensor]], n: int, acc: StepSums) -> None:
    """``n`` steps: the per-step path (batch, step, EMA, bookkeeping). It never reads a value
    back to the host; ``tests/test_fake_cuda.py`` runs it on a fake CUDA device to keep it so."""
    for _ in range(n):
        step = trainer.step
        batch = next(batches)
        acc.images = sum(len(view) for k in ("x_lb", "x_ulb") for view in batch[k])
        loss, metrics = trainer.train_step(batch)
        acc.add(step, loss, metrics)


def _train_epoch(trainer: Engine, batches: Iterator[dict[str, torch.Tensor]], end: int,
                 progress: Callable[[int, dict[str, float]], None] | None,
                 check_every: int) -> tuple[list[str], torch.Tensor, int]:
    """Steps up to ``end``, read back every ``check_every`` steps and at the end; the metric names,
    their sums on the device, images per step here."""
    start, acc = trainer.step, StepSums(trainer.device, trainer.algorithm.metrics)
    while trainer.step < end:
        run_steps(trainer, batches, min(check_every - (trainer.step - start) % check_every, end - trainer.step), acc)
        _raise_if_bad(trainer.collective.all_reduce(acc.bad_step.clone(), "max"))
        if progress is not None:
            progress(trainer.step, dict(zip(acc.names, (acc.sums / (trainer.step - start)).tolist())))
    return acc.names, acc.sums, acc.images


def _epoch_record(trainer: Engine, names: list[str], sums: torch.Tensor, local_images: int, steps: int,
                  seconds: float) -> dict[str, Any]:
    """The epoch's means over all ranks and steps, and its throughput."""
    cfg, collective = trainer.cfg, trainer.collective
    totals = collective.all_reduce(torch.cat([sums, sums.new_tensor([local_images])]), "sum")
    means = (totals[:-1] / (collective.world_size * steps)).tolist()
    images_per_step = int(totals[-1].item())  # the whole job's, summed over ranks
    return {
        "step": trainer.step,
        "epoch": len(trainer.history) + 1,
        "lr": schedule_lr(cfg, trainer.step - 1),
        **{metric_key(k): v for k, v in zip(names, means)},
        "images_per_s": images_per_step * steps / max(seconds, 1e-9),
        "samples_per_step": images_per_step,
        "world_size": collective.world_size,  # DDP ranks that ran the epoch
    }


def _raise_if_bad(bad_step: torch.Tensor) -> None:
    step = int(bad_step.item())
    if step >= 0:
        raise NonFiniteLossError(
            f"loss became NaN/inf at step {step}: training diverged (try a lower --lr, or --amp off)"
        )
