"""FlexMatch: learning effect, flexible thresholds, the update rule, resume and two real ranks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fixmatch_ray.algorithms import LOCAL, Context, FlexMatch, StepInput, TorchCollective
from fixmatch_ray.algorithms.flexmatch import learning_effect, update_selected

CPU = torch.device("cpu")
IDENTITY = lambda x: x.float()  # noqa: E731 - the "images" of these tests are the logits themselves


def cfg(**changes) -> FlexMatch.Options:
    return FlexMatch.Options(**changes)


def flex(options: FlexMatch.Options, num_classes: int, num_unlabeled: int, device=CPU) -> FlexMatch:
    return FlexMatch(options, Context(num_classes, num_unlabeled, torch.device(device)))


def step_input(x_lb, y_lb, weak, strong, idx, step=0) -> StepInput:
    """A FixMatch-style step: one labeled view, (weak, strong) unlabeled views."""
    return StepInput((x_lb,), y_lb, (weak, strong), idx, step)


def f32(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# -- learning effect β_c ---------------------------------------------------------------------
SELECTED = torch.tensor([-1, -1, -1, -1, 0, 0, 0, 1, 1, 2])  # 4 unused; class 0: 3, 1: 2, 2: 1, 3: 0


def test_learning_effect_with_warmup_divides_by_the_unused_count_when_larger():
    beta = learning_effect(SELECTED, 4, warmup=True, previous=torch.zeros(4))
    assert torch.equal(beta, f32(3 / 4, 2 / 4, 1 / 4, 0))


def test_learning_effect_without_warmup_divides_by_the_largest_class():
    beta = learning_effect(SELECTED, 4, warmup=False, previous=torch.zeros(4))
    assert torch.equal(beta, f32(1, 2 / 3, 1 / 3, 0))


def test_warmup_changes_nothing_once_a_class_outnumbers_the_unused():
    selected = torch.tensor([-1, 0, 0, 0, 1])
    for warmup in (True, False):
        assert torch.equal(learning_effect(selected, 4, warmup, torch.zeros(4)), f32(1, 1 / 3, 0, 0))


@pytest.mark.parametrize("warmup", [True, False])
@pytest.mark.parametrize("fill", [-1, 2])
def test_learning_effect_is_kept_while_one_bucket_holds_every_sample(warmup, fill):
    previous = f32(0.1, 0.2, 0.3, 0.4)  # the reference's update() skips: β stays as it was
    assert torch.equal(learning_effect(torch.full((6,), fill), 4, warmup, previous), previous)


# -- thresholds and mask ---------------------------------------------------------------------
def test_mapped_thresholds_hand_computed():
    beta = f32(0.5, 0.0, 1.0)
    expected = {
        "convex": [0.95 * 0.5 / 1.5, 0.0, 0.95],
        "linear": [0.95 * 0.75, 0.95 * 0.5, 0.95],
        "concave": [0.95 * (math.log(1.5) + 0.5) / (math.log(2) + 0.5),
                    0.95 * 0.5 / (math.log(2) + 0.5), 0.95],
    }
    for mapping, values in expected.items():
        algo = flex(cfg(flex_mapping=mapping), 3, 5, CPU)
        algo.classwise_acc = beta.clone()
        assert torch.allclose(algo.thresholds(), f32(*values), rtol=1e-6, atol=0), mapping
    assert math.isclose(expected["convex"][0], 0.3166666, rel_tol=1e-6)


def test_unknown_mapping_is_one_line():
    with pytest.raises(ValueError, match=r"^flex_mapping: unknown 'cubic'; expected one of "
                                         r"convex, linear, concave$"):
        cfg(flex_mapping="cubic")


def _log(*p: float) -> list[float]:
    return [math.log(v) for v in p]


def test_mask_loss_and_update_of_one_step_hand_computed():
    """τ = 0.95, no warm-up, β = (0.5, 1, 0, 0) from the state: thresholds (0.3167, 0.95, 0, 0)."""
    algo = flex(cfg(flex_warmup=False), 4, 8, CPU)
    selected = torch.tensor([0, 1, 1, -1, -1, -1, -1, -1])
    algo.load_state_dict({"selected_label": selected,
                          "classwise_acc": learning_effect(selected, 4, False, torch.zeros(4))})
    assert torch.equal(algo.classwise_acc, f32(0.5, 1, 0, 0))
    weak = torch.tensor([
        _log(0.40, 0.20, 0.20, 0.20),  # A: class 0, 0.40 >= 0.3167 -> in
        _log(0.30, 0.25, 0.25, 0.20),  # B: class 0, 0.30 <  0.3167 -> out
        _log(0.04, 0.90, 0.03, 0.03),  # C: class 1, 0.90 <  0.95   -> out
        _log(0.01, 0.97, 0.01, 0.01),  # D: class 1, 0.97 >= 0.95   -> in, and confident: selected
        _log(0.24, 0.24, 0.28, 0.24),  # E: class 2, threshold 0    -> in
    ])
    strong = torch.tensor([
        [math.log(2), 0, 0, 0],  # A vs 0: p = 2/5
        [9.0, -9, 9, 9],  # B, C: masked out, their CE must not count
        [-9.0, -9, 9, 9],
        [0.0, 0, 0, 0],  # D vs 1: p = 1/4
        [0, 0, math.log(3), 0],  # E vs 2: p = 3/6
    ])
    batch = step_input(torch.zeros(1, 4), torch.tensor([0]), weak, strong, torch.tensor([3, 4, 5, 0, 6]))
    loss, metrics = algo.train_step(IDENTITY, batch, LOCAL)

    loss_u = (math.log(5 / 2) + math.log(4) + math.log(2)) / 5  # mean over all five
    assert math.isclose(metrics["loss_x"].item(), math.log(4), rel_tol=1e-6)
    assert math.isclose(metrics["loss_u"].item(), loss_u, rel_tol=1e-6)
    assert math.isclose(loss.item(), math.log(4) + loss_u, rel_tol=1e-6)
    assert metrics["mask"].item() == pytest.approx(3 / 5)  # B out: the mask used the old β
    assert metrics["threshold"].item() == pytest.approx((0.95 / 3 + 0.95) / 4)
    assert sorted(metrics) == ["loss", "loss_u", "loss_x", "mask", "threshold"]
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    # Only D reached τ: sample 0 moves from class 0 to class 1, so class 0 has no sample left.
    assert algo.selected_label.tolist() == [1, 1, 1, -1, -1, -1, -1, -1]
    assert torch.equal(algo.classwise_acc, f32(0, 1, 0, 0))


def test_a_fresh_instance_lets_every_sample_through():
    # β = 0 at the start: the thresholds are 0 (the authors' behaviour), even for uniform predictions.
    algo = flex(cfg(), 3, 4, CPU)
    batch = step_input(torch.zeros(1, 3), torch.tensor([0]), torch.zeros(2, 3), torch.zeros(2, 3),
                       torch.tensor([0, 1]))
    _, metrics = algo.train_step(IDENTITY, batch, LOCAL)
    assert metrics["mask"].item() == 1.0 and metrics["threshold"].item() == 0.0
    assert algo.selected_label.tolist() == [-1, -1, -1, -1]  # nothing reached τ


def test_temperature_sharpens_before_the_confidence_test():
    algo = flex(cfg(T=0.25), 2, 3, CPU)  # softmax([1, 0]) = 0.73; softmax([4, 0]) = 0.982
    batch = step_input(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([[0.0, 1.0]]),
                       torch.zeros(1, 2), torch.tensor([2]))
    algo.train_step(IDENTITY, batch, LOCAL)
    assert algo.selected_label.tolist() == [-1, -1, 1]


# -- the update rule with repeated indices ---------------------------------------------------
def test_update_last_confident_occurrence_of_an_index_wins():
    selected = torch.tensor([-1, 7, -1, -1, -1, -1])
    idx = torch.tensor([3, 3, 5, 3, 1])
    pseudo = torch.tensor([1, 2, 0, 4, 2])
    confident = torch.tensor([True, True, True, False, False])
    out = update_selected(selected, idx, pseudo, confident)
    assert out.tolist() == [-1, 7, -1, 2, -1, 0]  # 3: the 2nd (last confident) one; 1: kept
    assert selected.tolist() == [-1, 7, -1, -1, -1, -1]  # a new tensor, the input untouched


def test_repeated_index_within_a_step_through_train_step():
    algo = flex(cfg(threshold=0.9), 3, 4, CPU)
    weak = torch.tensor([[9.0, 0, 0], [0, 9.0, 0], [0, 0, 0.5]])  # idx 2 twice, both confident
    batch = step_input(torch.zeros(1, 3), torch.tensor([0]), weak, weak, torch.tensor([2, 2, 0]))
    algo.train_step(IDENTITY, batch, LOCAL)
    assert algo.selected_label.tolist() == [-1, -1, 1, -1]
    assert torch.equal(algo.classwise_acc, f32(0, 1 / 3, 0))  # warm-up: 3 unused, 1 in class 1


# -- state: round trip and resume ------------------------------------------------------------
UNLABELED = torch.randn(12, 8, generator=torch.Generator().manual_seed(5))


def _step_input(step: int) -> StepInput:
    g = torch.Generator().manual_seed(100 + step)
    idx = torch.randint(0, 12, (6,), generator=g)  # with replacement: repeats happen
    x_lb = torch.randn(4, 8, generator=g)
    return step_input(x_lb, torch.randint(0, 4, (4,), generator=g), UNLABELED[idx],
                      UNLABELED[idx] + 0.1 * torch.randn(6, 8, generator=g), idx, step)


def _fresh(seed: int) -> tuple[torch.nn.Linear, torch.optim.SGD, FlexMatch]:
    torch.manual_seed(seed)
    net = torch.nn.Linear(8, 4)
    with torch.no_grad():
        net.weight.mul_(6.0)  # confident from the start, so the state moves
    return net, torch.optim.SGD(net.parameters(), lr=0.1), flex(cfg(threshold=0.8), 4, 12, CPU)


def _train(net, opt, algo, steps: range) -> list[dict[str, torch.Tensor]]:
    logs = []
    for step in steps:
        loss, metrics = algo.train_step(net, _step_input(step), LOCAL)
        opt.zero_grad()
        loss.backward()
        opt.step()
        logs.append(metrics)
    return logs


def test_state_dict_round_trip_is_exact_and_independent():
    net, opt, algo = _fresh(0)
    _train(net, opt, algo, range(3))
    state = algo.state_dict()
    other = flex(cfg(threshold=0.8), 4, 12, CPU)
    other.load_state_dict(state)
    assert torch.equal(other.selected_label, algo.selected_label)
    assert torch.equal(other.classwise_acc, algo.classwise_acc)
    state["selected_label"].fill_(3)  # the saved copy does not alias the live state
    assert not torch.equal(algo.selected_label, state["selected_label"])
    with pytest.raises(ValueError, match="state is for 12 unlabeled samples and 4 classes, this run has 13 and 4"):
        flex(cfg(), 4, 13, CPU).load_state_dict(algo.state_dict())


def test_resume_from_a_saved_state_continues_exactly(tmp_path):
    net, opt, algo = _fresh(0)
    straight = _train(net, opt, algo, range(6))

    net1, opt1, algo1 = _fresh(0)
    first = _train(net1, opt1, algo1, range(3))
    mid_state = algo1.state_dict()
    torch.save({"net": net1.state_dict(), "opt": opt1.state_dict(), "algo": mid_state},
               tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt")
    net2, opt2, algo2 = _fresh(1)  # different weights and an empty state until loaded
    net2.load_state_dict(ckpt["net"])
    opt2.load_state_dict(ckpt["opt"])
    algo2.load_state_dict(ckpt["algo"])
    resumed = first + _train(net2, opt2, algo2, range(3, 6))

    assert (mid_state["selected_label"] >= 0).any()  # the state moved before the save...
    assert not torch.equal(mid_state["selected_label"], algo.selected_label)  # ...and after it
    assert torch.equal(algo2.selected_label, algo.selected_label)
    assert torch.equal(algo2.classwise_acc, algo.classwise_acc)
    for a, b in zip(straight, resumed, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


# -- two real ranks (gloo) -------------------------------------------------------------------
def _global_batches() -> list[StepInput]:
    """Steps of 8 unlabeled samples over 10; index 0 only in step 0, confident on both ranks with
    different classes, so rank order decides it."""
    g = torch.Generator().manual_seed(7)
    batches = []
    for step in range(4):
        idx = torch.randint(1, 10, (8,), generator=g)
        weak = 3 * torch.randn(8, 3, generator=g)
        if step == 0:
            idx[0], idx[4] = 0, 0
            weak[0], weak[4] = torch.tensor([9.0, 0, 0]), torch.tensor([0, 0, 9.0])
        batches.append(step_input(torch.randn(4, 3, generator=g), torch.randint(0, 3, (4,), generator=g),
                                  weak, torch.randn(8, 3, generator=g), idx, step))
    return batches


def _rank_slice(b: StepInput, rank: int, world: int) -> StepInput:
    lb, ulb = len(b.x_lb[0]) // world, len(b.x_ulb[0]) // world
    sl, su = slice(rank * lb, (rank + 1) * lb), slice(rank * ulb, (rank + 1) * ulb)
    return step_input(b.x_lb[0][sl], b.y_lb[sl], b.x_ulb[0][su], b.x_ulb[1][su], b.idx_ulb[su], b.step)


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        coll = TorchCollective()
        probe = torch.tensor([[rank, 10 * rank]])
        gathered, summed, top = coll.all_gather(probe), coll.all_reduce(probe), coll.all_reduce(probe, "max")
        algo = flex(cfg(threshold=0.9), 3, 10, CPU)
        logs = [algo.train_step(IDENTITY, _rank_slice(b, rank, world), coll)[1] for b in _global_batches()]
        torch.save({"probe": probe, "gathered": gathered, "sum": summed, "max": top, "logs": logs,
                    "state": algo.state_dict()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_keep_identical_state_equal_to_one_process(tmp_path):
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["gathered"].tolist() == r1["gathered"].tolist() == [[0, 0], [1, 10]]
    assert r0["sum"].tolist() == [[1, 10]] and r0["max"].tolist() == [[1, 10]]
    assert r0["probe"].tolist() == [[0, 0]]  # all_reduce left its input alone

    single = flex(cfg(threshold=0.9), 3, 10, CPU)
    logs = [single.train_step(IDENTITY, b, LOCAL)[1] for b in _global_batches()]
    expected = single.state_dict()
    assert expected["selected_label"][0].item() == 2  # the later (rank 1) occurrence of index 0 won
    for r in (r0, r1):
        assert torch.equal(r["state"]["selected_label"], expected["selected_label"])
        assert torch.equal(r["state"]["classwise_acc"], expected["classwise_acc"])
    for step, whole in enumerate(logs):
        parts = (r0["logs"][step], r1["logs"][step])
        assert torch.equal(parts[0]["threshold"], whole["threshold"])
        for key in ("loss", "loss_x", "loss_u", "mask"):  # equal slices: mean of means = mean
            assert torch.allclose((parts[0][key] + parts[1][key]) / 2, whole[key], rtol=1e-6, atol=1e-7)
