"""``bench ray``'s checkpoint part: what one ``ray.train.report`` with a checkpoint costs the
training loop, synchronous against asynchronous upload, for a state the size of a paper run's.

One 1-worker Ray Train run (:func:`report_cost_loop`) drives the real :class:`RaySink` (the
sink every Ray run reports through) with a synthetic engine whose state is ``state_mb`` of
float32 tensors (WRN-28-8 with its EMA and SGD momentum: 3 x 23.4 M parameters = 280 MB;
WRN-28-2: 18 MB). Between reports the training thread computes (matrix products, a fixed amount
of work), so a background upload competes for the CPU as it would in a run. A report's cost is
how much longer the same work plus ``reports`` reports take than the work alone, per report:
the stall the training loop sees. The storage is a local directory (an "upload" is a local
copy); a network store makes the synchronous upload slower and leaves the asynchronous stall
as it is.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import RunConfig

PAPER_STEPS, PAPER_EVAL = 2**20, 1024
STATE_MB = {"wrn-28-2": 18, "wrn-28-8": 280}  # model + EMA + momentum, float32


@dataclass
class FakeEngine:
    """What :class:`RaySink` reads of an :class:`~fixmatch_ray.training.engine.Engine`: config, step, history, state."""

    cfg: RunConfig
    state: dict[str, Any]
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {**self.state, "step": self.step, "history": list(self.history)}

    def evaluated(self) -> dict[str, Any]:
        """One more evaluation: the row a real run's ``fit`` would add."""
        self.step += 1
        row = {"epoch": len(self.history) + 1, "step": self.step, "test_acc": 0.0, "test_loss": 0.0}
        self.history.append(row)
        return row


def synthetic_state(mb: float, pieces: int = 100) -> dict[str, Any]:
    """``mb`` MB of float32 tensors in ``pieces`` tensors, shaped like a state dict."""
    n = int(mb * 1e6 / 4 / pieces)
    gen = torch.Generator().manual_seed(0)
    return {"model": {f"w{i}": torch.rand(n, generator=gen) for i in range(pieces)}}


def _work(units: int) -> None:
    a = torch.ones(384, 384)
    for _ in range(units):
        a = (a @ a).clamp_(max=1.0)


def _calibrate(seconds: float) -> int:
    """Matrix-product units that take about ``seconds`` here (the gap between two reports)."""
    tic, units = time.perf_counter(), 0
    while time.perf_counter() - tic < seconds / 4:
        _work(5)
        units += 5
    return max(1, int(units * 4 * seconds / (time.perf_counter() - tic) / 4))


def report_cost_loop(config: dict[str, Any]) -> None:
    """Ray Train loop: per (state size, upload mode), ``reports`` reports between blocks of work;
    the figures go to ``figures.json`` in the run's directory (local storage)."""
    from ..launch.worker import RaySink

    reports, units = config["reports"], _calibrate(config["gap_s"])
    run_dir = config["run_dir"]
    cfg = RunConfig(dataset="digits", num_labeled=20, total_steps=10**9, seed=0)
    out: dict[str, Any] = {"gap_s": config["gap_s"], "reports": reports}

    def block(sink: RaySink, trainer: FakeEngine) -> float:
        tic = time.perf_counter()
        for _ in range(reports):
            _work(units)
            sink.epoch(trainer.evaluated(), trainer)
        return time.perf_counter() - tic

    tic = time.perf_counter()
    for _ in range(reports):
        _work(units)
    work_s = time.perf_counter() - tic
    out["work_s"] = work_s
    plain = FakeEngine(cfg.replace(checkpoint_every=10**9), {})
    out["no_checkpoint_s"] = (block(RaySink(0, run_dir), plain) - work_s) / reports
    for name, mb in config["sizes"].items():
        state = synthetic_state(mb)
        for mode in ("sync", "async"):
            trainer = FakeEngine(cfg.replace(checkpoint_every=1), state, step=plain.step + 1000)
            sink = RaySink(0, run_dir, upload=mode)
            stall = (block(sink, trainer) - work_s) / reports
            tic = time.perf_counter()
            plain.evaluated()  # a report without checkpoint (synchronous) waits for every upload before it
            RaySink(0, run_dir).epoch(plain.history[-1], plain)
            out[f"{name}_{mode}_s"] = stall
            out[f"{name}_{mode}_drain_s"] = time.perf_counter() - tic
        del state
    Path(run_dir, "figures.json").write_text(json.dumps(out))


def measure_reports(storage: str, sizes: dict[str, float], reports: int = 4, gap_s: float = 2.0) -> dict[str, Any]:
    """Run :func:`report_cost_loop` as a 1-worker Train run stored under ``storage``."""
    from ..config import Resources
    from ..launch.worker import run_loop_config, torch_trainer
    from ..storage import join

    cfg = RunConfig(dataset="digits", num_labeled=20, seed=0)
    config = {**run_loop_config(cfg, join(storage, "report-cost")), "sizes": sizes, "reports": reports, "gap_s": gap_s}
    trainer = torch_trainer(report_cost_loop, config, Resources(workers=1), storage, "report-cost", max_failures=0)
    trainer.fit()
    return json.loads(Path(storage, "report-cost", "figures.json").read_text())


def paper_share(per_report_s: float, step_s: float, checkpoint_every: int = 1) -> float:
    """Percent of a paper-length run's wall time (2^20 steps at ``step_s``, a report every 1024
    steps, a checkpoint every ``checkpoint_every`` reports) that reports of this cost take."""
    cost = PAPER_STEPS // PAPER_EVAL / checkpoint_every * per_report_s
    return 100 * cost / (PAPER_STEPS * step_s + cost)
