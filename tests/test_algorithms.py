"""The algorithm contract: registry, options, views, metrics, local collective, the forward's
BatchNorm control, and FixMatch equal to the engine's step."""
from __future__ import annotations

import copy

import pytest
import torch

from fixmatch_ray.algorithms import (ALGORITHMS, LOCAL, Algorithm, Context, FixMatch, FlexMatch, StepInput,
                                     build_algorithm, register)
from fixmatch_ray.algorithms.losses import fixmatch_loss
from fixmatch_ray.config import RunConfig
from fixmatch_ray.models import build_model
from fixmatch_ray.training.engine import Engine

CPU = torch.device("cpu")


def ctx(num_classes: int = 10, num_unlabeled: int = 50) -> Context:
    return Context(num_classes, num_unlabeled, CPU)


def fixmatch(**options) -> FixMatch:
    return FixMatch(FixMatch.Options(**options), ctx())


def test_registry_builds_each_builtin_by_name():
    assert {"fixmatch": FixMatch, "flexmatch": FlexMatch}.items() <= ALGORITHMS.items()
    algo = build_algorithm("flexmatch", FlexMatch.Options(), Context(10, 7, CPU, total_steps=100))
    assert isinstance(algo, FlexMatch) and algo.num_classes == 10 and algo.num_unlabeled == 7
    assert algo.device == CPU and algo.context.total_steps == 100


def test_unknown_algorithm_is_one_line_listing_the_known_ones():
    with pytest.raises(ValueError) as err:
        build_algorithm("mixmatch", FixMatch.Options(), ctx())
    message = str(err.value)
    assert "\n" not in message
    assert "'mixmatch'" in message and "fixmatch, flexmatch" in message


def test_an_algorithm_takes_its_own_options_only():
    with pytest.raises(TypeError, match="'flexmatch' takes FlexMatchOptions, got FixMatchOptions"):
        build_algorithm("flexmatch", FixMatch.Options(), ctx())


def test_register_needs_a_name_and_metrics_and_refuses_a_taken_one():
    class Nameless(Algorithm):
        metrics = ("loss",)

        def train_step(self, forward, batch, collective):
            raise NotImplementedError

    with pytest.raises(TypeError, match="Nameless must set a class attribute name"):
        register(Nameless)

    class Mute(Nameless):
        name = "mute"
        metrics = ()

    with pytest.raises(TypeError, match="Mute: it declares no metrics"):
        register(Mute)

    class Impostor(Nameless):
        name = "fixmatch"

    with pytest.raises(ValueError, match="'fixmatch' is already registered"):
        register(Impostor)
    assert ALGORITHMS["fixmatch"] is FixMatch


def test_local_collective_is_the_identity():
    t = torch.arange(6.0).reshape(3, 2)
    assert LOCAL.rank == 0 and LOCAL.world_size == 1
    assert torch.equal(LOCAL.all_gather(t), t)
    assert torch.equal(LOCAL.all_reduce(t, "max"), t)
    with pytest.raises(ValueError, match="all_reduce op 'mean' is not supported: expected one of sum, max"):
        LOCAL.all_reduce(t, "mean")


def test_stateless_algorithm_round_trips_an_empty_state_and_refuses_another():
    algo = fixmatch()
    assert algo.state_dict() == {}
    algo.load_state_dict({})
    with pytest.raises(ValueError, match="'fixmatch' keeps no state"):
        algo.load_state_dict({"selected_label": torch.zeros(5)})


def _batch(n_lb: int = 4, n_ulb: int = 6, seed: int = 0) -> StepInput:
    g = torch.Generator().manual_seed(seed)
    x_lb, y_lb = torch.rand(n_lb, 3, 32, 32, generator=g), torch.randint(0, 10, (n_lb,), generator=g)
    weak, strong = torch.rand(n_ulb, 3, 32, 32, generator=g), torch.rand(n_ulb, 3, 32, 32, generator=g)
    return StepInput(x_lb=(x_lb,), y_lb=y_lb, x_ulb=(weak, strong), idx_ulb=torch.randperm(50, generator=g)[:n_ulb],
                     step=0)


def as_batch(b: StepInput) -> dict:
    """A StepInput as the data paths hand a step's batch to the engine."""
    return {"x_lb": list(b.x_lb), "y_lb": b.y_lb, "x_ulb": list(b.x_ulb), "idx_ulb": b.idx_ulb}


def cat_views(b: StepInput) -> torch.Tensor:
    return torch.cat([*b.x_lb, *b.x_ulb])


def test_fixmatch_is_bit_identical_to_fixmatch_loss_on_the_split_logits():
    # A low threshold so that the mask is neither all 0 nor all 1 for this untrained net.
    torch.manual_seed(0)
    net = build_model("wideresnet", 10, depth=10, width=1)
    ref_net = copy.deepcopy(net)
    batch = _batch()

    loss, metrics = fixmatch(threshold=0.19, lambda_u=1.5).train_step(net, batch, LOCAL)
    loss.backward()

    logits = ref_net(cat_views(batch))
    logits_lb, logits_w, logits_s = logits.split([4, 6, 6])
    ref = fixmatch_loss(logits_lb, batch.y_lb, logits_w, logits_s, lambda_u=1.5, T=1.0, threshold=0.19)
    ref.loss.backward()

    assert 0.0 < ref.mask.item() < 1.0  # both branches of the mask are exercised
    assert torch.equal(loss, ref.loss)
    assert list(metrics) == ["loss", "loss_x", "loss_u", "mask"] == list(FixMatch.metrics)
    for key, value in metrics.items():
        assert value.dim() == 0 and not value.requires_grad
        assert torch.equal(value, getattr(ref, key))
    for p, q in zip(net.parameters(), ref_net.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


def test_engine_step_equals_the_pre_interface_fixmatch_step_exactly():
    """Engine.train_step (through the algorithm interface) = the step as written before the
    interface existed: set lr, one forward over cat(lb, weak, strong), fixmatch_loss, backward,
    optimiser, EMA. Same weights and EMA after each step, bit for bit."""
    from fixmatch_ray.training.optim import lr_at, set_lr

    cfg = RunConfig.from_dict(dict(depth=10, width=1, seed=3, threshold=0.15, total_steps=10))
    engine, mine = Engine(cfg, CPU, num_unlabeled=50), Engine(cfg, CPU, num_unlabeled=50)
    for step in range(2):
        batch = _batch(seed=step)
        loss, metrics = engine.train_step(as_batch(batch))

        set_lr(mine.optimizer, lr_at(mine.step, cfg.lr, cfg.total_steps, int(cfg.warmup)))
        n_lb, n_ulb = len(batch.x_lb[0]), len(batch.x_ulb[0])
        x = cat_views(batch).to(CPU, memory_format=torch.channels_last)
        mine.model.train()
        lb, w, st = mine.model(x).split([n_lb, n_ulb, n_ulb])
        out = fixmatch_loss(lb, batch.y_lb, w, st, lambda_u=1.0, T=1.0, threshold=0.15)
        mine.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        mine.optimizer.step()
        mine.ema.update(mine.net)
        mine.step += 1

        assert torch.equal(metrics["loss"], out.loss.detach()) and torch.equal(metrics["mask"], out.mask)
        if step == 0:
            assert 0.0 < out.mask.item() < 1.0
        for a, b in zip(engine.net.state_dict().values(), mine.net.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        for a, b in zip(engine.ema.state_dict().values(), mine.ema.state_dict().values(), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["fixmatch", "flexmatch"])
def test_train_step_has_no_host_sync(name):
    """Under FakeTensorMode tensors have no data: ``.item()``, ``.tolist()``, ``nonzero``, boolean
    indexing or ``bincount`` raise there, so a step that runs is free of them (CPU stand-in for
    ``torch.cuda.set_sync_debug_mode("error")``)."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

    with FakeTensorMode():
        algo = build_algorithm(name, ALGORITHMS[name].Options(), Context(3, 10, CPU))
        batch = StepInput((torch.randn(2, 3),), torch.tensor([0, 1]), (torch.randn(4, 3), torch.randn(4, 3)),
                          torch.tensor([1, 2, 2, 3]), 0)
        for _ in range(2):
            loss, metrics = algo.train_step(lambda x, update_bn=True: x, batch, LOCAL)
        assert loss.dim() == 0 and all(v.dim() == 0 for v in metrics.values())
        with pytest.raises(DataDependentOutputException):
            loss.item()  # the probe works: a host read is refused


# -- the official ablations through the interface: soft targets, the EMA model as teacher ------------
def test_fixmatch_teacher_ema_takes_the_pseudo_labels_from_ema_forward():
    """teacher: ema (ab_fixmatch_meanteacher): the student's forward still covers all three views,
    the pseudo-labels come from the EMA forward of the weak view (eval mode)."""
    options = dict(threshold=0.5, teacher="ema", pseudo_label="soft", T=0.5)
    torch.manual_seed(0)
    net = build_model("wideresnet", 10, depth=10, width=1)
    batch = _batch()
    teacher_logits = torch.randn(6, 10) * 4
    seen = []

    def ema_forward(x, train=False):
        seen.append((x, train))
        return teacher_logits

    batch.ema_forward = ema_forward
    loss, metrics = fixmatch(**options).train_step(net, batch, LOCAL)
    assert len(seen) == 1 and seen[0][0] is batch.x_ulb[0] and seen[0][1] is False
    logits = net(cat_views(batch))
    ref = fixmatch_loss(logits[:4], batch.y_lb, teacher_logits, logits[10:], threshold=0.5, T=0.5, pseudo="soft")
    assert torch.allclose(loss, ref.loss) and torch.equal(metrics["mask"], ref.mask)
    assert 0.0 < ref.mask.item() < 1.0

    seen.clear()
    fixmatch(teacher="ema_train").train_step(net, batch, LOCAL)
    assert seen[0][1] is True  # ab_fixmatch_meanteacher_train: batch statistics
    batch.ema_forward = None
    with pytest.raises(ValueError, match="teacher: ema needs the EMA model"):
        fixmatch(**options).train_step(net, batch, LOCAL)


def test_engine_gives_the_ema_forward_and_leaves_the_ema_unchanged_by_it():
    """Engine with teacher ema: one step = student forward over cat(lb, weak, strong), the EMA
    model (eval mode, before this step's update) labels the weak view. With ema_train the EMA's
    BatchNorm buffers move in its forward but the update copies the model's over them."""
    cfg = RunConfig.from_dict(dict(depth=10, width=1, seed=3, threshold=0.1, total_steps=10, teacher="ema",
                                   ema_decay=0.5))
    engine = Engine(cfg, CPU, num_unlabeled=50)
    engine.train_step(as_batch(_batch(seed=7)))  # the EMA now differs from the model
    ema_before = copy.deepcopy(engine.ema.module)
    mine = copy.deepcopy(engine)
    batch = _batch(seed=1)
    loss, _ = engine.train_step(as_batch(batch))
    x = cat_views(batch).contiguous(memory_format=torch.channels_last)
    mine.model.train()
    lb, _, st = mine.model(x).split([4, 6, 6])
    with torch.no_grad():
        w = ema_before.eval()(batch.x_ulb[0].contiguous(memory_format=torch.channels_last))
    ref = fixmatch_loss(lb, batch.y_lb, w, st, threshold=0.1)
    assert torch.equal(loss, ref.loss)
    assert not engine.ema.module.training

    cfg_t = RunConfig.from_dict(dict(depth=10, width=1, seed=3, threshold=0.1, total_steps=10, teacher="ema_train"))
    t = Engine(cfg_t, CPU, num_unlabeled=50)
    t.train_step(as_batch(batch))
    for a, b in zip(t.ema.module.buffers(), t.net.buffers(), strict=True):
        assert torch.equal(a, b)  # what the train-mode forward moved was overwritten by the update
    assert not t.ema.module.training


def test_ablation_steps_have_no_host_sync():
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

    with FakeTensorMode():
        algo = build_algorithm("fixmatch", FixMatch.Options(pseudo_label="soft", T=0.5, teacher="ema"),
                               Context(3, 10, CPU))
        batch = StepInput((torch.randn(2, 3),), torch.tensor([0, 1]), (torch.randn(4, 3), torch.randn(4, 3)),
                          torch.tensor([1, 2, 2, 3]), 0, ema_forward=lambda x, train=False: x * 2)
        loss, metrics = algo.train_step(lambda x, update_bn=True: x, batch, LOCAL)
        assert loss.dim() == 0 and all(v.dim() == 0 for v in metrics.values())
        with pytest.raises(DataDependentOutputException):
            loss.item()
