"""bench gpu's code path, tiny on the CPU (--device cpu --quick), and its projection by hand."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from fixmatch_ray.bench import gpu as bench_gpu

PAPER = Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml"


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    bench_gpu.add_arguments(p)
    return p.parse_args(list(argv))


def test_quick_cpu_run_writes_the_step_times_table(tmp_path, capsys):
    out, details = tmp_path / "steps.json", tmp_path / "details.json"
    args = parse("--device", "cpu", "--quick", "--steps", "1", "--windows", "2", "--pack", "1",
                 "--sweep", str(PAPER), "--out", str(out), "--details", str(details))
    assert bench_gpu.main(args) == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"card", "card_memory_gib", "images_per_step", "step_ms", "notes"}  # the plan's keys
    assert doc["card"] == "cpu" and doc["images_per_step"] == 8 * (1 + 2 * 2) and doc["notes"] == []
    assert set(doc["step_ms"]) == {"randaugment", "ctaugment"}  # both policies measured
    for policy in ("randaugment", "ctaugment"):
        times = doc["step_ms"][policy]["wideresnet-10-1"]
        assert set(times) == {"off", "bf16"} and all(isinstance(ms, float) and ms > 0 for ms in times.values())
    full = json.loads(details.read_text())
    m = full["measured"]["randaugment"]["wideresnet-10-1"]["off"]
    assert len(m["loop_ms"]["windows"]) == 2 and m["loop_ms"]["min"] <= m["loop_ms"]["median"]
    assert m["aug_ms"]["median"] > 0 and m["step_on_fixed_batch_ms"]["median"] > 0 and m["checkpoint_ms"] > 0
    assert m["precision"] == "fp32 (CPU)" and m["cuda_graphs"] is False  # no graph on the CPU
    assert doc["step_ms"]["randaugment"]["wideresnet-10-1"]["off"] == m["loop_ms"]["median"]
    (packed,) = full["packing"]
    assert packed["trials"] == 1 and len(packed["ms_per_step"]) == 1 and packed["steps_per_s"] > 0
    assert full["projection"]["estimated_trials"] == 30  # paper.yaml trains WRN-28-2/28-8, not WRN-10-1
    from fixmatch_ray.launch.plan import load_step_times  # the sweep plan reads it

    assert load_step_times(out).step_ms == doc["step_ms"]


def test_a_failed_stage_is_noted_and_the_rest_goes_on(tmp_path, monkeypatch, capsys):
    """The file is written after every measurement (a later crash keeps what came before); a
    measurement or a packing that fails is a note in it, and the other stages still run."""
    out = tmp_path / "steps.json"
    seen = []

    def measure(model, prec, s, device, policy="randaugment"):
        seen.append((policy, prec, json.loads(out.read_text())["step_ms"] if out.exists() else None))
        if (policy, prec) == ("randaugment", "bf16"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
        return {"loop_ms": {"median": 10.0 + len(seen), "min": 1.0, "windows": [1.0]}, "aug_ms": {"median": 1.0},
                "step_on_fixed_batch_ms": {"median": 1.0}, "amortised_eval_checkpoint_ms_per_step": 0.1,
                "peak_memory_gib": None, "cuda_graphs": False}

    def pack(k, args, s):
        raise RuntimeError("a packed trial exited with [1, -9]: killed")

    monkeypatch.setattr(bench_gpu, "measure", measure)
    monkeypatch.setattr(bench_gpu, "pack", pack)
    args = parse("--device", "cpu", "--quick", "--pack", "1,2", "--sweep", "", "--out", str(out))
    assert bench_gpu.main(args) == 0
    assert [s[:2] for s in seen] == [("randaugment", "off"), ("randaugment", "bf16"), ("ctaugment", "off"),
                                     ("ctaugment", "bf16")]
    assert seen[0][2] is None and seen[1][2] == {"randaugment": {"wideresnet-10-1": {"off": 11.0}}}  # written at once
    doc = json.loads(out.read_text())
    assert doc["step_ms"] == {"randaugment": {"wideresnet-10-1": {"off": 11.0}},
                              "ctaugment": {"wideresnet-10-1": {"off": 13.0, "bf16": 14.0}}}
    assert doc["notes"] == ["randaugment wideresnet-10-1 bf16: failed (RuntimeError: CUDA out of memory. Tried to "
                            "allocate 2.00 GiB)",
                            "1 packed trial(s) of wideresnet-10-1:off: failed (RuntimeError: a packed trial exited "
                            "with [1, -9]: killed)"]  # and no second packing: it would not fit better
    assert "randaugment wideresnet-10-1 bf16: failed" in capsys.readouterr().err


def test_projection_is_the_sweep_plans():
    """15 WRN-28-2 trials and 15 WRN-28-8 trials of 2^20 steps, amp off, 960 images a step, measured."""
    table = {"card": "NVIDIA H100 80GB HBM3", "images_per_step": 960,
             "step_ms": {"randaugment": {"wideresnet-28-2": {"off": 6.0, "bf16": 1.0}, "wideresnet-28-8": {"off": 35.0}}}}
    res = bench_gpu.project(str(PAPER), table)
    assert res["estimated_trials"] == 0
    assert res["gpu_hours"] == pytest.approx(15 * 2**20 * (6.0 + 35.0) / 3.6e6)  # 179.1
    half = bench_gpu.project(str(PAPER), {**table, "images_per_step": 480})  # measured at half the images
    assert half["gpu_hours"] == pytest.approx(2 * res["gpu_hours"])
    assert any("measured on NVIDIA H100 80GB HBM3" in line for line in res["plan"])


def test_without_cuda_it_exits_2_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main(parse()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bench gpu needs a CUDA device; none is visible" in err


@pytest.mark.parametrize("flag, value", [("--models", "wrn"), ("--precisions", "fp8")])
def test_unknown_model_or_precision_is_one_line(flag, value, capsys):
    assert bench_gpu.main(parse("--device", "cpu", flag, value)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{flag}: unknown {value!r}" in err
