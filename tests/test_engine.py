"""Unit tests of the training core without files or Ray: the eval-epoch loop, its records and
NaN guard, the trainer's state, the run record, checkpoints and which rank runs which sink."""
from __future__ import annotations

import math

import pytest
import torch

from evalset import Tensors
from fixmatch_ray.config import RunConfig
from fixmatch_ray.errors import CheckpointError, NonFiniteLossError
from fixmatch_ray.training.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from fixmatch_ray.training.engine import Engine, StepSums, fit, summarize
from fixmatch_ray.training.loop import Ranks, sinks_for
from fixmatch_ray.training.record import read_record, record_doc, write_record
from fixmatch_ray.training.sinks import Sink

CPU = torch.device("cpu")
CFG = RunConfig(dataset="digits", num_labeled=20, batch_size=4, mu=2, total_steps=7, eval_step=3, seed=2,
                depth=10, width=1, eval_batch_size=5)


def batches(n: int = 100, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x_lb, y_lb = torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g)
        weak, strong = torch.randn(8, 3, 16, 16, generator=g), torch.randn(8, 3, 16, 16, generator=g)
        yield {"x_lb": [x_lb], "y_lb": y_lb, "x_ulb": [weak, strong], "idx_ulb": torch.randint(0, 50, (8,), generator=g)}


def test_fit_evaluates_every_eval_step_and_at_the_end():
    trainer = Engine(CFG, CPU, num_unlabeled=50)
    test = Tensors(torch.randn(11, 3, 16, 16), torch.randint(0, 10, (11,)))
    seen, progress = [], []
    fit(trainer, batches(), test, on_epoch=seen.append, progress=lambda s, m: progress.append((s, sorted(m))),
        check_every=2)
    assert [r["step"] for r in seen] == [3, 6, 7] and [r["epoch"] for r in seen] == [1, 2, 3]
    assert all(r["world_size"] == 1 for r in seen)
    assert trainer.history == seen and trainer.step == 7
    rec = seen[0]
    for key in ("train_loss", "train_loss_x", "train_loss_u", "train_mask", "lr", "images_per_s", "test_acc",
                "test_loss", "raw_test_acc", "median20_acc", "best_acc", "wall_time"):
        assert key in rec, key
    assert rec["samples_per_step"] == 4 + 8 + 8
    assert rec["lr"] == pytest.approx(0.03 * math.cos(7 * math.pi * 2 / (16 * 7)))  # the lr of the epoch's last step
    assert 0 <= rec["test_acc"] <= 100 and 100 * round(rec["test_acc"] * 11 / 100) / 11 == pytest.approx(rec["test_acc"])
    # progress every 2 steps within an epoch and at its end, with the algorithm's metric names
    assert [s for s, _ in progress] == [2, 3, 5, 6, 7] and progress[0][1] == ["loss", "loss_u", "loss_x", "mask"]


def test_epoch_means_are_the_means_of_the_steps():
    """The record's train_* values are the means of the algorithm's per-step metrics."""
    trainer = Engine(CFG.replace(total_steps=3), CPU, num_unlabeled=50)
    twin = Engine(CFG.replace(total_steps=3), CPU, num_unlabeled=50)
    losses = [twin.train_step(b)[1]["loss"].item() for b in batches(3)]
    (rec,) = fit(trainer, batches(3), Tensors(torch.randn(5, 3, 16, 16), torch.randint(0, 10, (5,))))
    assert rec["train_loss"] == pytest.approx(sum(losses) / 3, rel=1e-6)


def test_non_finite_loss_names_its_step():
    trainer = Engine(CFG.replace(lr=1e30), CPU, num_unlabeled=50)
    with pytest.raises(NonFiniteLossError, match=r"loss became NaN/inf at step \d+"):
        fit(trainer, batches(), Tensors(torch.randn(5, 3, 16, 16), torch.randint(0, 10, (5,))), check_every=1)


def test_metrics_other_than_the_declared_ones_are_one_line():
    sums = StepSums(CPU, ("loss", "mask"))
    one = torch.ones(())
    sums.add(0, one, {"mask": one, "loss": one})  # the declared names, in any order
    with pytest.raises(ValueError, match=r"^the algorithm's train_step returned metrics \['loss', 'rate'\]; "
                                         r"it declares metrics = \('loss', 'mask'\)$"):
        StepSums(CPU, ("loss", "mask")).add(0, one, {"loss": one, "rate": one})


def test_forward_without_batchnorm_update_keeps_the_running_statistics():
    """forward(x, update_bn=False): the same logits and gradients as a tracking call (training mode:
    the batch's statistics), but every BatchNorm running buffer stays as it was; a tracking call
    moves them."""
    import copy

    trainer = Engine(CFG, CPU, num_unlabeled=50)
    twin = copy.deepcopy(trainer)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    trainer.model.train(), twin.model.train()
    before = {k: v.clone() for k, v in trainer.net.state_dict().items() if "running" in k or "num_batches" in k}
    quiet, moved = trainer._forward(x, update_bn=False), twin._forward(x)
    assert torch.equal(quiet, moved)
    quiet.sum().backward(), moved.sum().backward()
    for p, q in zip(trainer.net.parameters(), twin.net.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)
    after, twin_after = trainer.net.state_dict(), twin.net.state_dict()
    assert before and all(torch.equal(after[k], v) for k, v in before.items())
    assert not all(torch.equal(twin_after[k], v) for k, v in before.items())
    assert all(m.track_running_stats for m in trainer._batch_norms)  # switched back on


def test_summarize_is_the_median_of_the_last_twenty():
    history = [{"test_acc": float(a)} for a in [0] * 5 + list(range(1, 20)) + [100]]  # last 20: 1..19, 100
    s = summarize(history)
    assert s["median20_acc"] == pytest.approx(10.5)  # (10 + 11) / 2; the mean would be 14.5
    assert (s["best_acc"], s["last_acc"], s["evals"]) == (100.0, 100.0, 25)
    assert summarize([]) == {}


def test_trainer_state_round_trip_is_exact():
    a, b = Engine(CFG, CPU, num_unlabeled=50), Engine(CFG.replace(seed=9), CPU, num_unlabeled=50)
    for batch in batches(2):
        a.train_step(batch)
    a.history.append({"step": 2, "test_acc": 1.0})
    b.load_state_dict(a.state_dict())
    assert b.step == 2 and b.history == a.history
    for key in ("model", "ema", "optimizer"):
        sa, sb = a.state_dict()[key], b.state_dict()[key]
        flat = lambda s: [v for v in s.values() if torch.is_tensor(v)] if key != "optimizer" else [  # noqa: E731
            t for st in s["state"].values() for t in st.values()]
        assert all(torch.equal(x, y) for x, y in zip(flat(sa), flat(sb), strict=True)), key
    nxt = next(batches(1, seed=5))
    assert torch.equal(a.train_step(nxt)[0], b.train_step(nxt)[0])  # the same next step


def test_old_checkpoints_with_cuda_rng_states_still_load():
    """Checkpoints written before the CUDA states were dropped carry rng.cuda; they load anywhere."""
    a = Engine(CFG, CPU, num_unlabeled=50)
    state = a.state_dict()
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 4  # saved on a 4-GPU node
    Engine(CFG, CPU, num_unlabeled=50).load_state_dict(state)


def test_checkpoints_keep_the_previous_and_fall_back_to_it(tmp_path, capsys):
    save_checkpoint(tmp_path, {"step": 1, "model": {}})
    save_checkpoint(tmp_path, {"step": 2, "model": {}})
    assert load_checkpoint(tmp_path)[0]["step"] == 2 and find_checkpoint(tmp_path).name == "checkpoint.pt"
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    state, path = load_checkpoint(tmp_path)
    assert state["step"] == 1 and path.name == "checkpoint.prev.pt"
    assert "falling back to" in capsys.readouterr().err
    (tmp_path / "checkpoint.prev.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_ray_checkpoint_folders_newest_first(tmp_path):
    for ts, step in (("2026-01-01_00-00-01", 1), ("2026-01-01_00-00-03", 3), ("2026-01-01_00-00-02", 2)):
        save_checkpoint(tmp_path / f"checkpoint_{ts}", {"step": step, "model": {}})
    assert load_checkpoint(tmp_path)[0]["step"] == 3


def test_run_record_is_whole_and_rewritten_from_the_restored_history(tmp_path):
    cfg = CFG.to_dict()
    rows = [{"step": 3, "test_acc": 10.0}, {"step": 6, "test_acc": 30.0}, {"step": 7, "test_acc": 20.0}]
    doc = write_record(str(tmp_path), cfg, rows, {"name": "x"})
    assert read_record(str(tmp_path)) == doc == record_doc(cfg, rows, {"name": "x"})
    assert doc["finished"] and doc["step"] == 7 and doc["summary"]["median20_acc"] == 20.0
    write_record(str(tmp_path), cfg, rows[:1])  # a run resumed from step 3 starts by rewriting it
    again = read_record(str(tmp_path))
    assert [r["step"] for r in again["history"]] == [3] and not again["finished"]
    assert read_record(str(tmp_path / "none")) is None


def test_sinks_for_rank_zero_only_where_marked():
    class Chief(Sink):
        chief_only = True

    everyone, chief = Sink(), Chief()
    assert sinks_for([everyone, chief], Ranks(0, 2)) == [everyone, chief]
    assert sinks_for([everyone, chief], Ranks(1, 2)) == [everyone]


def test_finished_is_judged_in_one_place():
    """A run is finished at its last step: the record's flag says so from that step on, and no
    module but ``run_finished`` compares a step with ``total_steps`` (the loop's end, the last
    checkpoint, the trackers' summary and a restore at the end all ask it)."""
    import ast
    from pathlib import Path

    import fixmatch_ray

    rows = [{"step": s, "test_acc": 50.0} for s in (10, 20)]
    config = lambda steps: {**CFG.to_dict(), "total_steps": steps}  # noqa: E731
    assert record_doc(config(20), rows)["finished"]
    assert not record_doc(config(21), rows)["finished"]
    assert not record_doc(config(20), rows[:1])["finished"]
    compares = []
    for path in sorted(Path(fixmatch_ray.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and "total_steps" in ast.unparse(node):
                compares.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert compares == [c for c in compares if c.startswith("engine.py:") and c.endswith("step >= total_steps")]
    assert len(compares) == 1
