"""``bench first-run``'s orchestration on the CPU: one line without CUDA, a stage past its limit
stopped (SIGINT, then SIGKILL) while the next one runs, the digits written as a CIFAR-10 the loader
reads, the two benches' files merged, and the summary from what the stages wrote. The whole
command, every stage tiny: ``python -m fixmatch_ray.bench first-run --out DIR --device cpu --quick``."""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
import torch

from fixmatch_ray.bench import firstrun
from fixmatch_ray.bench.firstrun import Stage, digits_as_cifar10, main, merge_step_times, run_stage
from fixmatch_ray.bench.firstrun_summary import write_summary


def test_without_cuda_it_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--out", str(tmp_path / "fr")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: first-run needs a CUDA device; none is visible")
    assert not (tmp_path / "fr").exists()
    assert main(["--out", str(tmp_path / "fr"), "--device", "cpu", "--quick", "--stages", "gpu,sweep"]) == 2
    assert "--stages: unknown gpu; expected some of gpu-suite, bench-eager" in capsys.readouterr().err


def test_a_stage_past_its_limit_is_stopped_and_the_next_one_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(firstrun, "GRACE_S", 1)
    (tmp_path / "logs").mkdir()
    stubborn = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    polite = "import time; print('up', flush=True); time.sleep(60)"  # KeyboardInterrupt at SIGINT
    tic = time.monotonic()
    results = [run_stage(Stage(name, [sys.executable, "-c", code], 2), tmp_path / "logs")
               for name, code in (("stubborn", stubborn), ("polite", polite),
                                  ("quick", "print('done')"), ("broken", "raise SystemExit(3)"))]
    assert time.monotonic() - tic < 30
    assert [r["status"] for r in results] == ["timed out", "timed out", "passed", "failed"]
    assert results[0]["rc"] == -9 and results[1]["rc"] != -9 and results[3]["rc"] == 3  # killed / interrupted
    assert 2 <= results[0]["seconds"] < 10 and results[2]["seconds"] < 10
    assert (tmp_path / "logs" / "quick.log").read_text().splitlines()[-1] == "done"
    missing = run_stage(Stage("needs", [sys.executable, "-c", "0"], 5, needs=("no-such-folder",)), tmp_path / "logs")
    assert missing["status"] == "skipped" and "no no-such-folder here" in missing["why"]


def test_the_digits_as_cifar10_load_as_cifar10(tmp_path):
    from fixmatch_ray.data.datasets import load_dataset

    root = digits_as_cifar10(tmp_path)
    train = load_dataset("cifar10", str(root), "train", download=False)
    test = load_dataset("cifar10", str(root), "test", download=False)
    digits = load_dataset("digits", str(root), "train", download=False)
    assert train.images.shape == (1433, 32, 32, 3) and test.images.shape == (364, 32, 32, 3)
    assert np.array_equal(train.targets, digits.targets)  # the same images, in the same order
    assert np.array_equal(train.images[:, ::2, ::2].mean((1, 2)) > 40, digits.images.mean((1, 2)) > 40)


def test_the_benches_files_merge_into_one_step_times_file(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "eager.json").write_text(json.dumps({
        "card": "NVIDIA H100 80GB HBM3", "card_memory_gib": 79.1, "images_per_step": 960, "notes": ["a: failed (x)"],
        "step_ms": {"randaugment": {"wideresnet-28-2": {"off": 14.0}}, "ctaugment": {"wideresnet-28-2": {"off": 17.0}}}}))
    assert merge_step_times(tmp_path) == tmp_path / "step_times.json"  # one of the two is enough
    (tmp_path / "bench" / "compiled.json").write_text(json.dumps({
        "card": "NVIDIA H100 80GB HBM3", "card_memory_gib": 79.1, "images_per_step": 960, "notes": [],
        "step_ms": {"randaugment": {"wideresnet-28-2": {"off+compile": 9.0}}}}))
    merge_step_times(tmp_path)
    from fixmatch_ray.launch.plan import load_step_times

    table = load_step_times(tmp_path / "step_times.json")
    assert table.step_ms == {"randaugment": {"wideresnet-28-2": {"off": 14.0, "off+compile": 9.0}},
                             "ctaugment": {"wideresnet-28-2": {"off": 17.0}}}
    assert table.notes == ("a: failed (x)",) and table.card_memory_gib == 79.1


def test_the_summary_says_what_the_stages_wrote(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "logs").mkdir()
    m = {"loop_ms": {"median": 14.2}, "aug_ms": {"median": 0.9}, "step_on_fixed_batch_ms": {"median": 13.1},
         "peak_memory_gib": 7.75, "cuda_graphs": True}
    (tmp_path / "bench" / "eager_details.json").write_text(json.dumps({
        "measured": {"ctaugment": {"wideresnet-28-2": {"off": m}}}, "notes": ["b: failed (y)"],
        "packing": [{"trials": 2, "steps_per_s": 120.5}]}))
    (tmp_path / "short-run").mkdir()
    (tmp_path / "short-run" / "metrics.json").write_text(json.dumps({
        "config": {"arch": "wideresnet", "depth": 28, "width": 2}, "step": 3000, "precision": "fp32 (TF32 ...)",
        "summary": {"median20_acc": 97.1, "best_acc": 97.5},
        "history": [{"test_acc": 97.25, "images_per_s": 48000.0, "samples_per_step": 960}]}))
    (tmp_path / "junit.xml").write_text('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="1">'
                                        '<testcase name="t_ok"/><testcase name="t_bad"><failure message="boom\\nmore"/>'
                                        '</testcase></testsuite></testsuites>')
    (tmp_path / "logs" / "gpu-suite.log").write_text("[gpu] NVIDIA H100: 512 device kernels/copies per WRN-28-2 step\n")
    results = {"gpu-suite": {"status": "failed", "seconds": 91.0, "limit_s": 140, "log": "logs/gpu-suite.log"},
               "sweep": {"status": "timed out", "seconds": 75.2, "limit_s": 70, "log": "logs/sweep.log"}}
    text = write_summary(tmp_path, results, "cpu").read_text()
    assert "| gpu-suite | failed | 91 (140) | logs/gpu-suite.log |" in text
    assert "| sweep | timed out | 75 (70) | logs/sweep.log |" in text
    assert "- 5 tests: 3 passed, 1 failed, 0 errors, 1 skipped" in text and "FAILED t_bad: boom" in text
    assert "  - [gpu] NVIDIA H100: 512 device kernels/copies per WRN-28-2 step" in text
    assert "| ctaugment | wideresnet-28-2 | off | 14.20 | 0.90 (graph) | 13.10 | 7.75 |" in text
    assert "- b: failed (y)" in text and "- 2 packed trial(s): 120.5 steps/s in all" in text
    assert "test accuracy 97.25 % (median of the last evaluations 97.10 %, best 97.50 %), 50.0 steps/s" in text


@pytest.mark.slow
def test_the_gpu_suite_stage_on_the_cpu_writes_its_xml_and_the_summary(tmp_path, capsys):
    """The real command, its first stage: ``pytest -m gpu`` skips every test here (no CUDA)."""
    assert main(["--out", str(tmp_path), "--device", "cpu", "--quick", "--stages", "gpu-suite"]) == 0
    assert "[first-run] gpu-suite: skipped" in capsys.readouterr().out
    assert (tmp_path / "junit.xml").is_file() and (tmp_path / "logs" / "gpu-suite.log").is_file()
    text = (tmp_path / "summary.md").read_text()
    assert "pytest ran no test: every one skipped (no CUDA device)" in text and "2 skipped" in text
