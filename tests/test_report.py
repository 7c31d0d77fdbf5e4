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
    """A trial as the sweep leaves it: its Train run's record (one history row per eval) and, for
    a trial that failed for good, the driver's status file saying so."""
    from fixmatch_ray.training.record import write_record

    run = RunConfig(dataset=setting["dataset"], num_labeled=setting["num_labeled"], seed=seed,
                    total_steps=total, eval_step=total // 4 or 1, lambda_u=lambda_u).resolved().to_dict()
    name = f"{label.replace(' ', '_')}.s{seed}"
    history = []
    for i, acc in enumerate(accs):
        hist = accs[: i + 1]
        med = sorted(hist[-20:])[len(hist[-20:]) // 2] if len(hist[-20:]) % 2 else \
            sum(sorted(hist[-20:])[len(hist[-20:]) // 2 - 1: len(hist[-20:]) // 2 + 1]) / 2
        history.append({"step": (i + 1) * (total // 4), "test_acc": acc, "mask_rate": 0.1 * i, "median20_acc": med,
                        "best_acc": max(hist), "last_acc": acc})
    run_name = f"{name}-abc{seed}"
    write_record(str(exp / "train" / run_name), run, history,
                 {"name": name, "label": label, "seed": seed, "setting": setting})
    if error:
        status = exp / "trials.json"
        runs = json.loads(status.read_text())["runs"] if status.exists() else {}
        status.write_text(json.dumps({"runs": {**runs, run_name: "failed"}}))


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
    assert fm["last_acc"]["mean"] == pytest.approx(92.0) and fm["best_acc"]["mean"] == pytest.approx(92.0)
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


def test_a_retried_trial_is_running_not_failed(tmp_path):
    """A trial whose earlier attempt failed and that Tune is retrying: its record is unfinished
    and the driver has not marked it failed for good, so it counts as running."""
    exp = tmp_path / "exp"
    c10 = {"dataset": "cifar10", "num_labeled": 40}
    fake_trial(exp, "cifar10@40", c10, 1, [50.0, 60.0], total=8)
    (exp / "train" / "cifar10@40.s1-abc1" / "error.txt").write_text("an earlier attempt died")
    fake_trial(exp, "cifar10@40", c10, 2, [50.0, 60.0, 70.0, 80.0], total=8)
    row = aggregate(read_trials(exp))[0]
    assert (row["n"], row["running"], row["failed"]) == (1, 1, 0)
    assert {t.seed: t.status for t in read_trials(exp)} == {1: "running", 2: "finished"}
