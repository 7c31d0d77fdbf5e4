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
    assert set(doc) == {"card", "images_per_step", "step_ms"}  # exactly the plan's --step-times keys
    assert doc["card"] == "cpu" and doc["images_per_step"] == 8 * (1 + 2 * 2)
    assert set(doc["step_ms"]) == {"wideresnet-10-1"} and set(doc["step_ms"]["wideresnet-10-1"]) == {"off", "bf16"}
    assert all(isinstance(ms, float) and ms > 0 for ms in doc["step_ms"]["wideresnet-10-1"].values())
    full = json.loads(details.read_text())
    m = full["measured"]["wideresnet-10-1"]["off"]
    assert len(m["loop_ms"]["windows"]) == 2 and m["loop_ms"]["min"] <= m["loop_ms"]["median"]
    assert m["aug_ms"]["median"] > 0 and m["step_on_fixed_batch_ms"]["median"] > 0 and m["checkpoint_ms"] > 0
    assert doc["step_ms"]["wideresnet-10-1"]["off"] == m["loop_ms"]["median"]
    (packed,) = full["packing"]
    assert packed["trials"] == 1 and len(packed["ms_per_step"]) == 1 and packed["steps_per_s"] > 0
    assert len(full["projection"]["not_measured"]) == 30  # paper.yaml trains WRN-28-2/28-8, not WRN-10-1
    try:
        from fixmatch_ray.launch.plan import load_step_times  # the sweep plan's reader, once merged
    except ImportError:
        return
    assert load_step_times(out).step_ms == doc["step_ms"]


def test_projection_of_the_paper_sweep_by_hand():
    """15 WRN-28-2 trials and 15 WRN-28-8 trials of 2^20 steps, amp off, 960 images a step."""
    table = {"wideresnet-28-2": {"off": 6.0, "bf16": 1.0}, "wideresnet-28-8": {"off": 35.0}}
    res = bench_gpu.project(str(PAPER), table, 960)
    assert res["not_measured"] == []
    assert res["gpu_hours"] == pytest.approx(15 * 2**20 * (6.0 + 35.0) / 3.6e6)  # 179.1
    half = bench_gpu.project(str(PAPER), table, 480)  # measured at half the images: twice as long
    assert half["gpu_hours"] == pytest.approx(2 * res["gpu_hours"])


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
