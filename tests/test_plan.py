"""``sweep FILE --dry-run``: the plan's numbers by hand, nothing written, one-line errors, and every
sweep file under sweeps/ passing the sweep's validation. No Ray: no cluster is reachable here."""
from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixmatch_ray.config import parse_sweep
from fixmatch_ray.config.resources import Resources
from fixmatch_ray.errors import ConfigError
from fixmatch_ray.launch.plan import DEFAULTS, load_step_times, make_plan, makespan, model_key, trials_at_once
from fixmatch_ray.launch.preflight import check_capacity
from fixmatch_ray.perf.cards import CARDS
from fixmatch_ray.perf.estimate import ddp_speedup, memory_gib, step_estimate
from fixmatch_ray.perf.steptimes import step_time
from fixmatch_ray.sweep import main
from rayhead import new_head, remove

ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "sweeps").rglob("*.yaml"))


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch, tmp_path):
    """No RAY_ADDRESS and a Ray temp dir with no recorded cluster: the plan assumes the file's resources."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))


def small(tmp_path: Path, **over) -> dict:
    doc = {"name": "small", "storage": str(tmp_path / "store"),
           "base": {"total_steps": 100_000, "data_dir": str(tmp_path / "data"), "amp": "off"},
           "grid": [{"dataset": "cifar10", "num_labeled": [40, 250]}], "seeds": [1, 2, 3],
           "resources": {"workers": 1, "gpus_per_worker": 1, "cpus_per_worker": 2}}
    doc.update(over)
    return doc


def write(tmp_path: Path, doc: dict | str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return p


def plan_on(spec, have, table=DEFAULTS):
    """The plan as the sweep makes it: capacity from the cluster's resources (None: none reachable)."""
    return make_plan(spec, check_capacity(spec, have, autoscaling=False), table, have=have)


def step_file(tmp_path: Path, doc) -> Path:
    p = tmp_path / "steps.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def test_plan_numbers_by_hand_with_a_step_time_file(tmp_path):
    spec = parse_sweep(small(tmp_path))
    table = load_step_times(step_file(tmp_path, {"card": "T", "step_ms": {"wideresnet-28-2": {"off": 36.0}}}))
    # 8 CPU / (2 + 0.01 driver) = 3 trials by CPU, 4 by GPU: 3 at once
    plan = plan_on(spec, {"CPU": 8.0, "GPU": 4.0}, table)
    assert (plan.trials, plan.settings, plan.seeds, plan.at_once) == (6, 2, 3, 3)
    # 100,000 steps x 36 ms = 3,600 s = 1 GPU-hour a trial; 6 trials; two waves of 3
    assert plan.gpu_hours == pytest.approx(6.0)
    assert plan.wall_hours == pytest.approx(2.0)
    assert [(c, h, src) for _, c, h, src in plan.rows] == [(6, pytest.approx(1.0), "measured on T")]


def test_shared_gpus_and_ddp_by_hand(tmp_path):
    table = load_step_times(step_file(tmp_path, {"step_ms": {"wideresnet-28-2": {"off": 36.0}}}))
    # half a GPU a trial: 2 trials share the GPU, each at half speed (2 h), 3 rounds of 2 h
    half = parse_sweep(small(tmp_path, resources={"gpus_per_worker": 0.5, "cpus_per_worker": 2}))
    plan = plan_on(half, {"CPU": 8.0, "GPU": 1.0}, table)
    assert (plan.at_once, plan.gpu_hours, plan.wall_hours) == (2, pytest.approx(6.0), pytest.approx(6.0))
    # 2 DDP workers of one GPU: the measured one-GPU time over the DDP model's speed-up (not 2x)
    ddp = parse_sweep(small(tmp_path, resources={"workers": 2, "gpus_per_worker": 1, "cpus_per_worker": 2}))
    plan = plan_on(ddp, {"CPU": 16.0, "GPU": 4.0, "fixmatch_driver": 100}, table)
    speedup = ddp_speedup("wideresnet-28-2", "off", "randaugment", 960, 2)
    assert 1 < speedup < 2
    trial_h = 100_000 * 36.0 / speedup / 3.6e6
    assert (plan.at_once, plan.gpu_hours, plan.wall_hours) == (2, pytest.approx(6 * 2 * trial_h),
                                                               pytest.approx(3 * trial_h))
    assert any(f"runs {speedup:.1f}x as fast as on one GPU by the DDP model" in n for n in plan.notes)


def test_plan_numbers_by_hand_with_the_defaults(tmp_path):
    spec = parse_sweep(small(tmp_path))
    plan = plan_on(spec, None, DEFAULTS)  # no cluster: max_concurrent_trials unset -> one at a time
    ms = step_estimate("wideresnet-28-2", "off", "randaugment", 960).ms  # the model's H100 estimate
    assert 9 < ms < 25  # between the memory floor (~9 ms) and three times the estimate's expected range
    assert plan.at_once == 1
    assert plan.gpu_hours == pytest.approx(6 * 100_000 * ms / 3.6e6) and plan.wall_hours == pytest.approx(plan.gpu_hours)
    assert plan.rows[0][3] == "estimate" and plan.card.name == "H100" and plan.card_from == "assumed"
    plan = plan_on(parse_sweep(small(tmp_path, max_concurrent_trials=4)), None, DEFAULTS)
    assert plan.at_once == 4 and plan.wall_hours == pytest.approx(2 * 100_000 * ms / 3.6e6)  # 4 then 2


def test_cli_prints_the_plan_and_marks_estimates(tmp_path, capsys):
    steps = step_file(tmp_path, {"card": "H100 (bench gpu)", "step_ms": {"wideresnet-28-2": {"off": 36.0}}})
    assert main([str(write(tmp_path, small(tmp_path))), "--dry-run", "--step-times", str(steps)]) == 0
    out = capsys.readouterr().out
    assert "[plan] small: 6 trials = 2 settings x 3 seeds" in out
    assert "1 worker x (2 CPU, 1 GPU)" in out and "assuming the resources the file asks for" in out
    assert "cifar10 wideresnet-28-2 fp32 (TF32) randaugment, ~8.4 GiB a GPU: 6 trials x 100,000 steps at 36 " \
           "ms/step = 1 GPU-h/trial [measured on H100 (bench gpu)]" in out
    assert "GPU-hours: 6.0; wall time: 6.0 h (0.2 days) with 1 trial at once on H100" in out
    assert "estimate for one" not in out and "evaluation, checkpoints" in out
    assert main([str(write(tmp_path, small(tmp_path))), "--dry-run"]) == 0
    out = capsys.readouterr().out
    ms = step_estimate("wideresnet-28-2", "off", "randaugment", 960).ms
    assert f"at {ms:.3g} ms/step = {100_000 * ms / 3.6e6:.3g} GPU-h/trial [estimate]" in out
    assert "[plan] estimate for one H100 (H100 SXM5 80GB data sheet: 494.7 TFLOP/s TF32" in out
    assert "the card is assumed (--card NAME for another)" in out and "issue" not in out
    assert "IEEE fp32 throughout (tf32: false, the official code's arithmetic) would take" in out
    assert main([str(write(tmp_path, small(tmp_path))), "--dry-run", "--card", "A10G"]) == 0
    out = capsys.readouterr().out
    slow = step_estimate("wideresnet-28-2", "off", "randaugment", 960, CARDS["A10G"]).ms
    assert f"at {slow:.3g} ms/step" in out and "estimate for one A10G (A10 data sheet" in out and slow > 3 * ms
    assert main([str(write(tmp_path, small(tmp_path))), "--dry-run", "--card", "K80"]) == 2
    assert "--card K80: unknown GPU; expected one of H100, H200, A100, A10G, L4, V100, T4" in capsys.readouterr().err


def test_cpu_trials_estimate_no_gpu_time(tmp_path, capsys):
    doc = small(tmp_path, resources={"workers": 1, "cpus_per_worker": 1})
    plan = plan_on(parse_sweep(doc), None)
    assert plan.gpu_hours == 0 and plan.wall_hours is None and not plan.rows
    assert main([str(write(tmp_path, doc)), "--dry-run"]) == 0
    assert "CPU training: 0 GPU-hours; wall time not estimated" in capsys.readouterr().out


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_dry_run_writes_nothing(tmp_path, capsys):
    sweep = write(tmp_path, small(tmp_path))
    store = tmp_path / "store"
    before = snapshot(tmp_path)
    assert main([str(sweep), "--dry-run"]) == 0
    assert snapshot(tmp_path) == before  # no experiment, no lease, no status file, no download
    assert not store.exists() and not (tmp_path / "data").exists()
    # an earlier experiment of this file: the dry run reads it (would resume) and changes no byte
    (store / "small" / "train").mkdir(parents=True)
    (store / "small" / "sweep.yaml").write_text(sweep.read_text())
    (store / "small" / "train" / "metrics.json").write_text("{}")
    before = snapshot(store)
    assert main([str(sweep), "--dry-run"]) == 0
    assert "resumes " in capsys.readouterr().out
    assert snapshot(store) == before


def test_a_resume_from_another_file_fails_as_the_sweep_would(tmp_path, capsys):
    (tmp_path / "store" / "small").mkdir(parents=True)
    (tmp_path / "store" / "small" / "sweep.yaml").write_text("name: other\n")
    sweep = write(tmp_path, small(tmp_path))
    assert main([str(sweep), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "differs from the one" in err and "\n" not in err
    assert main([str(sweep), "--dry-run", "--fresh"]) == 0  # --fresh would move it aside


def test_a_live_driver_is_refused_and_a_dead_ones_lease_noted(tmp_path, capsys):
    from fixmatch_ray.launch.lease import Holder

    sweep = write(tmp_path, small(tmp_path))
    exp = tmp_path / "store" / "small"
    exp.mkdir(parents=True)
    (exp / "sweep.yaml").write_text(sweep.read_text())
    (exp / "lease.json").write_bytes(Holder.this_process().to_bytes())  # alive: this very process
    assert main([str(sweep), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is in use by another driver" in err and "\n" not in err
    gone = Holder("elsewhere", 1, "h", "2020-01-01T00:00:00+00:00", "2020-01-01T00:00:00+00:00")
    (exp / "lease.json").write_bytes(gone.to_bytes())
    before = snapshot(exp)
    assert main([str(sweep), "--dry-run"]) == 0
    assert "its lease would be taken over: the previous driver sent no heartbeat" in capsys.readouterr().out
    assert snapshot(exp) == before


@pytest.mark.parametrize("doc, match", [
    ("not json", "not JSON"),
    ({"card": "x"}, "non-empty \"step_ms\""),
    ({"step_ms": {"wideresnet-28-2": {"fp8": 3.0}}}, "step_ms.wideresnet-28-2.fp8: unknown precision"),
    ({"step_ms": {"wideresnet-28-2": {"off": -1}}}, "expected milliseconds > 0, got -1"),
    ({"step_ms": {"wideresnet-28-2": {"off": 1}}, "images": 3}, "unknown key(s) images"),
    ({"step_ms": {"wideresnet-28-2": {"off": 1}}, "images_per_step": 0}, "images_per_step: expected a positive"),
])
def test_bad_step_time_file_is_one_line(tmp_path, capsys, doc, match):
    sweep = write(tmp_path, small(tmp_path))
    assert main([str(sweep), "--dry-run", "--step-times", str(step_file(tmp_path, doc))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --step-times ") and match in err and "\n" not in err
    assert main([str(sweep), "--dry-run", "--step-times", str(tmp_path / "missing.json")]) == 2
    assert "cannot read it" in capsys.readouterr().err


@pytest.mark.parametrize("doc, match", [
    ({"resources": {"workers": 1, "gpus_per_worker": 1.5}}, "gpus_per_worker"),
    ({"base": {"total_steps": 0}}, "total_steps"),
    ({"storage": "s3://"}, "storage"),
])
def test_bad_sweep_file_is_one_line(tmp_path, capsys, doc, match):
    bad = write(tmp_path, small(tmp_path, **doc))
    assert main([str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and match in err and "\n" not in err


def test_unwritable_storage_is_refused_without_writing(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([str(write(tmp_path, small(tmp_path, storage=str(blocker / "sub")))), "--dry-run"]) == 2
    assert "cannot write to" in capsys.readouterr().err and blocker.read_text() == "x"


def test_lookup_rules(tmp_path):
    runs = {t.run.dataset: t.run for t in parse_sweep({
        "name": "k", "base": {"amp": "auto"}, "seeds": [1],
        "grid": [{"dataset": "stl10", "num_labeled": [1000]}, {"dataset": "cifar100", "num_labeled": [400], "mu": 3}]}).trials}
    assert model_key(runs["stl10"]) == "wideresnet-46-2-s5" and model_key(runs["cifar100"]) == "wideresnet-28-8"
    table = load_step_times(step_file(tmp_path, {"images_per_step": 960, "step_ms": {
        "wideresnet-28-8": {"fp16": 20.0, "bf16": 30.0, "bf16+compile": 10.0}}}))
    # auto -> bf16 on a card with native bf16 (an unnamed card: H100 assumed); mu 3: 448 images, not 960
    assert step_time(runs["cifar100"], table).ms == pytest.approx(30.0 * 448 / 960)
    assert step_time(runs["cifar100"].replace(compile=True), table).ms == pytest.approx(10.0 * 448 / 960)
    # on a V100 (no native bf16) auto is fp16 + GradScaler
    assert step_time(runs["cifar100"], table, card=CARDS["V100"]).ms == pytest.approx(20.0 * 448 / 960)
    # not in the file: the model's estimate, labelled so
    got = step_time(runs["stl10"], table)
    assert got.source == "estimate" and got.ms == step_estimate("wideresnet-46-2-s5", "bf16", "randaugment", 960).ms
    assert step_time(runs["stl10"].replace(depth=10, scales=3), table) is None  # no counts for this net
    # tf32: false is IEEE fp32, its own key
    ieee = load_step_times(step_file(tmp_path, {"step_ms": {"randaugment": {"wideresnet-28-8": {"off": 5, "ieee": 9}}}}))
    off = runs["cifar100"].replace(amp="off")
    assert step_time(off, ieee).ms == pytest.approx(5 * 448 / 960)
    assert step_time(off.replace(tf32=False), ieee).ms == pytest.approx(9 * 448 / 960)


def test_a_step_time_file_per_policy_and_the_earlier_format(tmp_path):
    """``step_ms`` keyed by policy (what bench gpu writes now) or by model (earlier files: RandAugment)."""
    old = load_step_times(step_file(tmp_path, {"step_ms": {"wideresnet-28-2": {"off": 14.0}}}))
    assert old.step_ms == {"randaugment": {"wideresnet-28-2": {"off": 14.0}}}
    new = load_step_times(step_file(tmp_path, {"card": "NVIDIA H100 80GB HBM3", "card_memory_gib": 79.1,
                                               "notes": ["x: failed"], "step_ms": {
        "randaugment": {"wideresnet-28-2": {"off": 14.0}}, "ctaugment": {"wideresnet-28-2": {"off": 16.0}}}}))
    run = parse_sweep(small(tmp_path)).trials[0].run
    assert step_time(run, new).ms == 14.0 and step_time(run.replace(policy="ctaugment"), new).ms == 16.0
    assert new.card_memory_gib == 79.1 and new.notes == ("x: failed",)
    with pytest.raises(ConfigError, match="step_ms.fixmatch: unknown policy; expected randaugment or ctaugment"):
        load_step_times(step_file(tmp_path, {"step_ms": {"randaugment": {"wideresnet-28-2": {"off": 1}},
                                                         "fixmatch": {}}}))


def test_the_plan_refuses_a_trial_too_big_for_the_cards_memory(tmp_path, capsys):
    """STL-10's 96 px WRN-46-2 in bf16 needs ~24 GiB by the memory model: refused on a 24 GB A10G
    (22.4 GiB) named by --card, a step-time file's measured memory or the cluster's accelerator type."""
    doc = small(tmp_path, base={"total_steps": 1000, "amp": "bf16", "data_dir": str(tmp_path / "d")},
                grid=[{"dataset": "stl10", "num_labeled": [1000]}], seeds=[1])
    need = memory_gib("wideresnet-46-2-s5", "bf16", "randaugment", 960, "stl10")
    assert 22.4 < need < 30
    assert main([str(write(tmp_path, doc)), "--dry-run"]) == 0  # the H100 assumed: only said
    assert f"~{need:.1f} GiB a GPU" in capsys.readouterr().out
    assert main([str(write(tmp_path, doc)), "--dry-run", "--card", "A10G"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: stl10@1000.s1: a trial needs ~{need:.1f} GiB of GPU memory (wideresnet-46-2-s5, bf16, "
                   "by the memory model) but the A10G has 22.4 GiB; use a bigger GPU or more DDP workers")
    small_card = step_file(tmp_path, {"card": "NVIDIA L4", "card_memory_gib": 22.0,
                                      "step_ms": {"randaugment": {"wideresnet-28-2": {"off": 40.0}}}})
    assert main([str(write(tmp_path, doc)), "--dry-run", "--step-times", str(small_card)]) == 2
    assert "but the L4 has 22.0 GiB" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="but the A10G has 22.4 GiB"):
        plan_on(parse_sweep(doc), {"CPU": 8, "GPU": 1, "accelerator_type:A10G": 1}, DEFAULTS)
    assert plan_on(parse_sweep(doc), {"CPU": 8, "GPU": 1, "accelerator_type:A100": 1}, DEFAULTS).card.name == "A100"


def test_capacity_and_makespan():
    assert trials_at_once(Resources(1, 2.0, 0.5), {"CPU": 16, "GPU": 2, "fixmatch_driver": 10}) == 4
    with pytest.raises(ConfigError, match="a trial needs 1 GPU"):
        trials_at_once(Resources(1, 1.0, 1.0), {"CPU": 16})
    assert trials_at_once(Resources(1, 1.0, 1.0), {"CPU": 16}, autoscaling=True) == 1
    assert makespan([3, 1, 1, 1], 2) == 3 and makespan([1, 1, 1], 5) == 1 and makespan([2, 2, 2], 2) == 4


@pytest.mark.parametrize("path", SWEEP_FILES)
def test_every_sweep_file_passes_the_dry_run(path, tmp_path, capsys):
    assert main([str(ROOT / path), "--dry-run", "--storage", str(tmp_path / "store")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "[plan] dry run: nothing started, nothing written" in out
    assert not (tmp_path / "store").exists()


def test_barely_dry_run_shows_16_trials_over_4_labeled_sets(tmp_path, capsys):
    assert main([str(ROOT / "sweeps" / "barely.yaml"), "--dry-run", "--storage", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "[plan] fixmatch-barely: 16 trials = 4 settings x 4 seeds, over 4 labeled sets (split_seed)" in out
    plan = plan_on(parse_sweep(small(tmp_path)), None, DEFAULTS)
    assert plan.labeled_sets is None  # no split_seed: each seed draws its own set, nothing to say


def test_the_dry_run_does_not_import_ray(tmp_path):
    code = ("import sys; from fixmatch_ray.sweep import main; rc = main(['sweeps/paper.yaml', '--dry-run', "
            f"'--storage', {str(tmp_path / 's')!r}]); sys.exit(rc or ('ray' in sys.modules) * 3)")
    env = {**__import__("os").environ, "RAY_TMPDIR": str(tmp_path / "raytmp")}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    ms = [step_estimate(m, "off", "randaugment", 960).ms for m in ("wideresnet-28-2", "wideresnet-28-8")]
    assert f"GPU-hours: {15 * 2**20 * sum(ms) / 3.6e6:,.1f}" in out.stdout  # 15 trials each over 2^20 steps


def test_a_dead_recorded_cluster_is_one_line(tmp_path, capsys):
    """As the sweep: a cluster `ray start` recorded but that is gone is refused, not silently skipped."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    (tmp_path / "raytmp" / "ray").mkdir(parents=True)
    (tmp_path / "raytmp" / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
    assert main([str(write(tmp_path, small(tmp_path))), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"records a Ray cluster at 127.0.0.1:{port} that is not running" in err and "\n" not in err


@pytest.mark.ray
def test_the_plan_reads_a_recorded_cluster(tmp_path):
    """A live `ray start` cluster of 6 CPUs and 2 (logical) GPUs: the plan joins it and reads its
    resources; 2 CPU + 0.01 for the trial's driver -> 2 trials by CPU, 2 by GPU."""
    head = new_head(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))  # Ray 2.60 local clusters: token auth
    try:
        head.start("--num-cpus=6", "--num-gpus=2")
        steps = step_file(tmp_path, {"card": "T", "step_ms": {"wideresnet-28-2": {"off": 36.0}}})
        cmd = [sys.executable, "-m", "fixmatch_ray.sweep", str(write(tmp_path, small(tmp_path))), "--dry-run",
               "--step-times", str(steps)]
        out = subprocess.run(cmd, cwd=ROOT, env=head.env, capture_output=True, text=True, timeout=300)
    finally:
        remove(head)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(rf"at once: 2 \(cluster at [0-9.]+:{head.port}: 6 CPU, 2 GPU\)", out.stdout), out.stdout
    assert "GPU-hours: 6.0; wall time: 3.0 h" in out.stdout  # 6 one-hour trials, 2 at once
    assert not (tmp_path / "store").exists()
