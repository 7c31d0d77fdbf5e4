"""Aggregation on synthetic result files with known mean/std, and every output written."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from fixmatch_ray.config import RunConfig
from fixmatch_ray.results.report import aggregate, main, read_trials, report_experiment


def fake_trial(exp: Path, label: str, setting: dict, seed: int, accs: list[float], total: int,
               error: bool = False, lambda_u: float = 1.0) -> None:
    """A Tune trial directory as the sweep writes it: params.json and one result row per eval."""
    run = RunConfig(dataset=setting["dataset"], num_labeled=setting["num_labeled"], seed=seed,
                    total_steps=total, eval_step=total // 4 or 1, lambda_u=lambda_u).resolved().to_dict()
    name = f"{label.replace(' ', '_')}.s{seed}"
    d = exp / f"{name}_abc{seed}"
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps({"trial": {"name": name, "label": label, "seed": seed,
                                                         "setting": setting, "run": run}}))
    rows = []
    for i, acc in enumerate(accs):
        hist = accs[: i + 1]
        med = sorted(hist[-20:])[len(hist[-20:]) // 2] if len(hist[-20:]) % 2 else \
            sum(sorted(hist[-20:])[len(hist[-20:]) // 2 - 1: len(hist[-20:]) // 2 + 1]) / 2
        rows.append({"step": (i + 1) * (total // 4), "test_acc": acc, "mask_rate": 0.1 * i, "median20_acc": med,
                     "best_acc": max(hist), "last_acc": acc})
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if error:
        (d / "error.txt").write_text("boom")


@pytest.fixture
def experiment(tmp_path) -> Path:
    exp = tmp_path / "exp"
    c10 = {"dataset": "cifar10", "num_labeled": 40}
    # final medians: the last evals are constant, so median20 = that value: 90, 92, 94
    for seed, v in ((1, 90.0), (2, 92.0), (3, 94.0)):
        fake_trial(exp, "cifar10@40", c10, seed, [50.0, v, v, v], total=8)
    fake_trial(exp, "cifar10@40", c10, 4, [50.0, 60.0], total=8)  # still running
    fake_trial(exp, "cifar10@40", c10, 5, [50.0], total=8, error=True)  # failed
    sup = {"dataset": "cifar10", "num_labeled": 40, "lambda_u": 0.0}
    for seed, v in ((1, 40.0), (2, 50.0)):
        fake_trial(exp, "cifar10@40 lambda_u=0.0", sup, seed, [v] * 4, total=8, lambda_u=0.0)
    return exp


def test_known_mean_and_sample_std(experiment):
    rows = {r["setting"]: r for r in aggregate(read_trials(experiment))}
    fm = rows["cifar10@40"]
    assert fm["n"] == 3 and fm["seeds"] == [1, 2, 3] and (fm["running"], fm["failed"]) == (1, 1)
    assert fm["median20_acc"]["mean"] == pytest.approx(92.0)
    assert fm["median20_acc"]["std"] == pytest.approx(2.0)  # ddof=1: sqrt((4+0+4)/2)
    assert fm["error"]["mean"] == pytest.approx(8.0)
    assert fm["paper_error"] == {"mean": 13.81, "std": 3.37}
    assert fm["delta_paper_std"] == pytest.approx((8.0 - 13.81) / 3.37)
    sup = rows["cifar10@40 lambda_u=0.0"]
    assert sup["n"] == 2 and sup["median20_acc"]["mean"] == pytest.approx(45.0)
    assert sup["median20_acc"]["std"] == pytest.approx(math.sqrt(50))
    assert sup["paper_error"] is None and sup["delta_paper_std"] is None  # no paper number for a baseline


def test_include_unfinished_counts_running_trials(experiment):
    fm = {r["setting"]: r for r in aggregate(read_trials(experiment), include_unfinished=True)}["cifar10@40"]
    assert fm["n"] == 5  # the failed trial has a history too: counted only when asked


def test_outputs_written(experiment, capsys):
    assert main([str(experiment)]) == 0
    out = capsys.readouterr().out
    assert "| cifar10@40 | 3 | 8.00 ± 2.00 | 13.81 ± 3.37 | -1.72 |" in out
    for name in ("results.md", "results.csv", "results.json", "results.tex", "acc_vs_step.png", "mask_vs_step.png"):
        assert (experiment / name).is_file() and (experiment / name).stat().st_size > 0
    doc = json.loads((experiment / "results.json").read_text())
    assert doc["std_ddof"] == 1 and len(doc["trials"]) == 7
    rows = list(csv.DictReader((experiment / "results.csv").open()))
    assert float(rows[0]["median20_acc_std"]) == pytest.approx(2.0)
    assert r"13.81 $\pm$ 3.37" in (experiment / "results.tex").read_text()
    assert (experiment / "acc_vs_step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hp = list((experiment / "hparams").glob("*/events.*")) + list((experiment / "hparams").glob("*/*/events.*"))
    assert len({p.relative_to(experiment / "hparams").parts[0] for p in hp}) == 7
    assert not list(experiment.glob(".*.tmp"))


def test_hparams_readable_by_tensorboard(experiment):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    report_experiment(str(experiment), quiet=True)
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(experiment / "hparams"))
    mux.Reload()
    plugin_runs = mux.PluginRunToTagToContent("hparams")
    assert len(plugin_runs) >= 7


def test_missing_experiment(tmp_path, capsys):
    assert main([str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "holds no sweep trials" in capsys.readouterr().err


def test_final_row_reported_twice_counts_once_but_a_restart_shows(tmp_path):
    exp = tmp_path / "exp"
    c10 = {"dataset": "cifar10", "num_labeled": 40}
    fake_trial(exp, "cifar10@40", c10, 1, [50.0, 60.0, 70.0, 80.0], total=8)
    fake_trial(exp, "cifar10@40", c10, 2, [50.0, 60.0, 70.0, 80.0], total=8)
    d1 = next(exp.glob("*s1_*"))
    rows = (d1 / "result.json").read_text().splitlines()
    (d1 / "result.json").write_text("\n".join(rows + [rows[-1]]) + "\n")  # the final report again
    d2 = next(exp.glob("*s2_*"))
    (d2 / "result.json").write_text("\n".join(rows[:2] + rows) + "\n")  # a restart from step 0
    trials = {t.seed: [h["step"] for h in t.history] for t in read_trials(exp)}
    assert trials[1] == [2, 4, 6, 8]
    assert trials[2] == [2, 4, 2, 4, 6, 8]  # not hidden
