"""State that learns during training (CTAugment's rates, FlexMatch's per-sample labels) through
the real run loop: identical on two DDP ranks (gloo, real processes), exact across a resume."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fixmatch_ray.algorithms import TorchCollective
from fixmatch_ray.config import RunConfig
from fixmatch_ray.training.checkpoint import load_checkpoint
from fixmatch_ray.training.loop import Ranks, run_local, run_training
from fixmatch_ray.training.sinks import CheckpointSink, Sink

CPU = torch.device("cpu")
CFG = RunConfig.from_dict(dict(dataset="digits", num_labeled=20, batch_size=8, mu=2, total_steps=12, eval_step=4,
                               seed=5, depth=10, width=1, ema_decay=0.9, threshold=0.3, policy="ctaugment",
                               aug_backend="tensor", algorithm="flexmatch", num_workers=0, device="cpu"))


def learned(state: dict) -> dict[str, torch.Tensor]:
    return {"rates": state["policy"]["rates"], **state["algorithm"]}


class Capture(Sink):
    def __init__(self):
        self.trainer = None

    def start(self, trainer):
        self.trainer = trainer


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from torch.nn.parallel import DistributedDataParallel

        cap = Capture()
        run_training(CFG, CPU, [cap], Ranks(rank, world, TorchCollective()), wrap=DistributedDataParallel)
        torch.save(learned(cap.trainer.state_dict()), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_learn_identical_rates_and_labels(tmp_path):
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert set(r0) == {"rates", "selected_label", "classwise_acc"}
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    assert not torch.equal(r0["rates"], torch.ones_like(r0["rates"]))  # the rates did move
    assert (r0["selected_label"] >= 0).any()  # and FlexMatch did select samples


class StopAfter(Sink):
    """Interrupts the run after the evaluation at ``step`` (its checkpoint already written)."""

    def __init__(self, step: int):
        self.step = step

    def epoch(self, record, trainer):
        if record["step"] >= self.step:
            raise KeyboardInterrupt


def test_learned_state_survives_a_resume_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_local(CFG.replace(out=str(straight)), progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_training(CFG, CPU, [CheckpointSink(split), StopAfter(4)])
    state, _ = load_checkpoint(split)
    assert state["step"] == 4
    run_local(CFG.replace(out=str(split)), state=state, progress=False)
    a, b = load_checkpoint(straight)[0], load_checkpoint(split)[0]
    for key, value in learned(a).items():
        assert torch.equal(value, learned(b)[key]), key
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
