"""The captured-augmentation path (``data/graphs.py``) checked on the CPU: a stand-in capture that,
like a CUDA graph, runs the captured function on the graph's own input tensors and writes into its
own output tensors on every replay. It shows the plumbing a real replay depends on: the step's
indices copied in, the generator seeded before each replay, the outputs handed out as copies, a
learning policy's state read where the capture found it, and a failed capture falling back. That a
real CUDA graph replays the same values as eager CUDA is checked by the GPU suite
(``tests/test_gpu.py``)."""
from __future__ import annotations

import pytest
import torch

import gpucheck

from fixmatch_ray.config import RunConfig
from fixmatch_ray.data import graphs
from fixmatch_ray.data.graphs import StepGraph
from fixmatch_ray.data.policies import build_policy
from fixmatch_ray.training.loop import load_run_data, step_batches

CPU = torch.device("cpu")
CFG = RunConfig(dataset="digits", num_labeled=20, batch_size=8, mu=2, total_steps=12, eval_step=6, seed=5,
                aug_backend="tensor", depth=10, width=1, num_workers=0)


def test_a_step_graph_replays_what_eager_code_seeded_alike_draws():
    gen, capture = torch.Generator(), gpucheck.StandInCapture()
    table = torch.arange(100.0)

    def fn(idx):
        return {"x": table.index_select(0, idx) + torch.rand(len(idx), generator=gen), "n": idx + 1}

    graph = StepGraph(fn, gen, capture)
    held, expected = [], []
    for step in range(6):
        idx = torch.tensor([step, step + 1, 2 * step])
        out = graph(1000 + step, idx)
        gen_eager = torch.Generator().manual_seed(1000 + step)
        expected.append({"x": table.index_select(0, idx) + torch.rand(3, generator=gen_eager), "n": idx + 1})
        assert all(torch.equal(out[k], expected[-1][k]) for k in out), step
        held.append(out)  # as a caller may: the next replay must not change it
        assert graph.captured is (step >= graphs.WARMUP_STEPS)
    assert capture.captures == 1 and capture.replays == 6 - graphs.WARMUP_STEPS
    assert all(torch.equal(h[k], e[k]) for h, e in zip(held, expected) for k in h)


def test_a_capture_that_fails_is_one_warning_and_the_steps_stay_eager(capsys):
    gen = torch.Generator()

    def refuse(fn, gen, *inputs):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    graph = StepGraph(lambda idx: idx * torch.rand(1, generator=gen), gen, refuse)
    outs = [graph(7, torch.ones(2)) for _ in range(5)]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the augmentation runs eagerly (its CUDA graph capture failed: RuntimeError: " \
        "operation not permitted when stream is capturing)" in err
    assert not graph.captured and all(torch.equal(o, outs[0]) for o in outs)


@pytest.mark.parametrize("policy", ["randaugment", "ctaugment"])
def test_graphed_device_batches_equal_eager_ones_step_by_step(policy):
    """The whole step's augmentation through the stand-in graph: every batch equal to the eager
    path's, CTAugment's rates moving between steps (the replay must see the new ones)."""
    cfg = CFG.replace(policy=policy)
    assert step_batches(cfg, load_run_data(cfg), 0, device=CPU).graph is None  # cuda_graphs is on, but not on the CPU
    capture = gpucheck.StandInCapture()
    assert gpucheck.graphed_batches_equal_eager(CPU, policy, capture=capture)
    assert capture.captures == 1 and capture.replays == 6 - graphs.WARMUP_STEPS


def test_ctaugment_updates_its_rates_in_place():
    """A captured graph reads the rates from the tensor it saw at capture: an update or a restore
    that made a new tensor would leave the graph drawing from stale (or freed) memory."""
    policy = build_policy("ctaugment", CPU)
    rates = policy.batched.rates
    policy.learn((torch.zeros(4, 2, dtype=torch.long), torch.full((4, 2, 2), 0.5, dtype=torch.float64)),
                 torch.full((4, 10), 0.1), torch.arange(4))
    assert policy.batched.rates is rates and not torch.equal(rates, torch.ones_like(rates))
    policy.load_state_dict({"rates": torch.full_like(rates, 0.25)})
    assert policy.batched.rates is rates and torch.equal(rates, torch.full_like(rates, 0.25))
