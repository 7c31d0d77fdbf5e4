"""What one run (a sweep trial, or ``train --ddp-workers``) asks of the cluster."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .strict import check_types, require

if TYPE_CHECKING:
    from .run import RunConfig


@dataclass(frozen=True)
class Resources:
    """G DDP workers per run, each with these CPUs/GPUs (and custom Ray resources)."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # 0: CPU training; a fraction lets small 1-worker runs share a GPU
    # custom Ray resources per worker, e.g. {"accelerator_type:A100": 0.001} to pin a GPU type
    custom_per_worker: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self)
        require(self.workers >= 1, f"workers: expected a positive integer, got {self.workers}")
        require(self.cpus_per_worker > 0, f"cpus_per_worker: expected a number > 0, got {self.cpus_per_worker}")
        g = self.gpus_per_worker
        require(0 <= g <= 1, f"gpus_per_worker: expected 0, a fraction of one GPU, or 1, got {g} (a worker "
                "trains on one GPU: ask for more workers to use more GPUs)")
        # Ray may place two ranks of one run on the same GPU when each asks for a fraction, and
        # NCCL refuses a communicator with a duplicate device: only whole GPUs for DDP.
        require(self.workers == 1 or g == int(g),
                f"gpus_per_worker: {g} with {self.workers} workers: DDP ranks each need a whole GPU (NCCL "
                "refuses two ranks on one device); use gpus_per_worker: 1, or workers: 1 to share a GPU between trials")
        for k, v in self.custom_per_worker.items():
            require(v > 0, f"custom_per_worker: expected resource name: amount > 0, got {k!r}: {v!r}")

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def check(self, cfg: "RunConfig") -> None:
        """Batch sizes are global: each of the G workers takes 1/G of every step's batch."""
        for name, b in (("batch_size", cfg.batch_size), ("mu * batch_size", cfg.unlabeled_batch_size)):
            if b % self.workers:
                raise ConfigError(
                    f"{name} = {b} is not divisible by {self.workers} DDP workers "
                    "(batch sizes are global: each worker takes 1/G of every step)"
                )

    def per_worker(self) -> dict[str, float]:
        """Ray's ``resources_per_worker`` (Train's ScalingConfig adds the GPU itself)."""
        res = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            res["GPU"] = self.gpus_per_worker
        res.update(self.custom_per_worker)
        return res

    def per_run(self) -> dict[str, float]:
        """Everything one run holds while it trains: G × what a worker takes."""
        return {k: v * self.workers for k, v in self.per_worker().items() if v > 0}
