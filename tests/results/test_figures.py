"""The report's model-selection and class-level figures, on run records with known values."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixmatch_ray.config import RunConfig
from fixmatch_ray.results.report import report_experiment
from fixmatch_ray.training.record import write_record


def trial(exp: Path, seed: int, vals: list[float], tests: list[float], confusion: list[list[int]]) -> None:
    run = RunConfig.from_dict(dict(dataset="digits", num_labeled=20, seed=seed, total_steps=len(vals),
                                   eval_step=1, val_size=30)).resolved().to_dict()
    history = [{"step": i + 1, "val_acc": v, "test_acc": t, "test_balanced_acc": t - 1, "test_macro_f1": t - 2,
                "test_top5_acc": 99.0} for i, (v, t) in enumerate(zip(vals, tests))]
    history[-1]["test_confusion"] = confusion
    write_record(str(exp / "train" / f"digits@20.s{seed}-x"), run, history,
                 {"name": f"digits@20.s{seed}", "label": "digits@20", "seed": seed, "setting": {"dataset": "digits"}})


def test_selected_on_validation_and_the_confusion_figure(tmp_path):
    exp = tmp_path / "exp"
    eye = [[2 if r == c else 0 for c in range(10)] for r in range(10)]
    # seed 1: best validation at eval 2 (80) -> test 60, though test peaks at eval 3 (90)
    trial(exp, 1, [50.0, 80.0, 70.0], [40.0, 60.0, 90.0], eye)
    # seed 2: validation ties at 75 (evals 1 and 3): the first is chosen -> test 70
    trial(exp, 2, [75.0, 60.0, 75.0], [70.0, 50.0, 95.0], eye)
    report_experiment(str(exp), quiet=True)
    doc = json.loads((exp / "results.json").read_text())
    (row,) = doc["figures"]
    assert row["test_at_best_val_acc"]["mean"] == pytest.approx(65.0)
    assert row["test_at_best_val_acc"]["std"] == pytest.approx(7.0710678)  # sample std of 60, 70
    assert row["best_val_acc"]["mean"] == pytest.approx(77.5)
    assert row["test_balanced_acc"]["mean"] == pytest.approx((89 + 94) / 2)  # the last evaluation's
    assert "| digits@20 | 2 | 65.00 ± 7.07 | 77.50 ± 3.54 |" in (exp / "results.md").read_text()
    # nothing chosen on the test set: the summary's best_acc is the validation-selected test accuracy
    assert {t["seed"]: t["best_acc"] for t in doc["trials"]} == {1: 60.0, 2: 70.0}
    png = exp / "confusion_digits@20.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_figures_section_without_the_figures(tmp_path):
    from test_report import fake_trial

    fake_trial(tmp_path / "exp", "cifar10@40", {"dataset": "cifar10", "num_labeled": 40}, 1, [50.0], total=8)
    report_experiment(str(tmp_path / "exp"), quiet=True, plots=False)
    assert "Model selection" not in (tmp_path / "exp" / "results.md").read_text()
