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
               error: bool = False, lambda_u: float = 1.0, **run_kw) -> None:
    """A trial as the sweep leaves it: its Train run's record (one history row per eval) and, for
    a trial that failed for good, the driver's status file saying so."""
    from fixmatch_ray.training.record import write_record

    run = RunConfig.from_dict(dict(dataset=setting["dataset"], num_labeled=setting["num_labeled"], seed=seed,
                                   total_steps=total, eval_step=total // 4 or 1, lambda_u=lambda_u,
                                   **run_kw)).resolved().to_dict()
    name = f"{label.replace(' ', '_')}.s{seed}"
    history = []
    for i, acc in enumerate(accs):
        hist = accs[: i + 1]
        med = sorted(hist[-20:])[len(hist[-20:]) // 2] if len(hist[-20:]) % 2 else \
            sum(sorted(hist[-20:])[len(hist[-20:]) // 2 - 1: len(hist[-20:]) // 2 + 1]) / 2
        history.append({"step": (i + 1) * (total // 4), "test_acc": acc, "train_mask": 0.1 * i, "median20_acc": med,
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


def test_training_metrics_and_algorithm_options_under_their_names(experiment):
    """The report's training-metrics table (last evaluation, mean over finished seeds) and
    results.load's columns: the algorithm and each of its options at its resolved value."""
    from fixmatch_ray import results

    report_experiment(str(experiment), plots=False, quiet=True)
    md = (experiment / "results.md").read_text()
    assert "| setting | train_mask |" in md
    assert "| cifar10@40 | 0.3000 |" in md and "| cifar10@40 lambda_u=0.0 | 0.3000 |" in md  # 0.1·i at i = 3
    df = results.load(str(experiment))
    assert {"algorithm", "lambda_u", "T", "threshold", "anchoring", "pseudo_label", "teacher"} <= set(df.columns)
    assert set(df.algorithm) == {"fixmatch"} and set(df.threshold) == {0.95} and set(df["T"]) == {1.0}
    assert df.groupby("setting").lambda_u.unique().to_dict() == {"cifar10@40": [1.0], "cifar10@40 lambda_u=0.0": [0.0]}
    assert "train_mask" in df.columns and "flex_mapping" not in df.columns


def test_outputs_written(experiment, capsys):
    assert main([str(experiment)]) == 0
    out = capsys.readouterr().out
    assert "| cifar10@40 | 3 | 8.00 ± 2.00 | 13.81 ± 3.37 | -1.72 |" in out
    for name in ("results.md", "results.csv", "results.json", "results.tex", "acc_vs_step.png", "train_mask_vs_step.png"):
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


# -- the ablation view: by the axis the settings differ in --------------------------------------------
def ablation_trial(exp: Path, setting: dict, seed: int, acc: float, **run_keys) -> None:
    """A finished trial whose last evaluations all read ``acc`` (so its median20 is ``acc``)."""
    from fixmatch_ray.config.sweep import _label
    from fixmatch_ray.training.record import write_record

    axes = {k: v for k, v in setting.items() if k != "dataset"}
    run = RunConfig.from_dict(dict(dataset=setting["dataset"], num_labeled=250, seed=seed, total_steps=8,
                                   eval_step=2, **{**axes, **run_keys})).resolved().to_dict()
    label = _label(setting)
    history = [{"step": 2 * (i + 1), "test_acc": acc, "train_mask": 0.5, "median20_acc": acc, "best_acc": acc,
                "last_acc": acc} for i in range(4)]
    name = f"{label.replace(' ', '_')}.s{seed}"
    write_record(str(exp / "train" / f"{name}-x{seed}"), run, history,
                 {"name": name, "label": label, "seed": seed, "setting": setting})


def test_threshold_ablation_rows_by_value_with_n_seeds(tmp_path, capsys):
    from fixmatch_ray.results.aggregate import ablation

    exp = tmp_path / "threshold"
    accs = {0.5: (80.0, 84.0), 0.95: (90.0, 92.0), 0.8: (85.0, 85.0)}
    for tau, (a, b) in accs.items():
        for seed, acc in ((1, a), (2, b)):
            ablation_trial(exp, {"dataset": "cifar10", "threshold": tau}, seed, acc)
    trials = read_trials(exp)
    view = ablation(trials, aggregate(trials))
    assert view["axis"] == "threshold" and view["series_axes"] == [] and view["layout"] == "lines"
    assert [p["threshold"] for p in view["points"]] == [0.5, 0.8, 0.95]  # numeric order, not the labels'
    p50, p80, p95 = view["points"]
    assert p50["n"] == 2 and p50["seeds"] == [1, 2] and p50["error"]["mean"] == pytest.approx(18.0)
    assert p50["error"]["std"] == pytest.approx(math.sqrt(8))  # ddof = 1: |80 - 84| / sqrt(2)
    assert p80["error"] == {"mean": pytest.approx(15.0), "std": 0.0}
    assert p95["error"]["mean"] == pytest.approx(9.0)

    assert main([str(exp)]) == 0
    out = capsys.readouterr().out
    assert "### Error by threshold" in out and "| 0.95 | 2 | 9.00 ± 1.41 | 91.00 ± 1.41 | 1,2 |" in out
    assert "| cifar10@250 threshold=0.95 |" not in out  # (the setting table keeps its own rows)
    assert "| cifar10 threshold=0.95 | 2 |" in out
    png = exp / "ablation.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((exp / "results.json").read_text())
    assert doc["ablation"]["axis"] == "threshold" and len(doc["ablation"]["points"]) == 3
    assert "### Error by threshold" in (exp / "results.md").read_text()


def test_series_and_heterogeneous_blocks(tmp_path):
    """Sharpening-style: x = threshold, a line per (pseudo_label, T); the hard block leaves T out of
    its setting, its value comes from the run config (1.0)."""
    from fixmatch_ray.results.aggregate import ablation

    exp = tmp_path / "sharpen"
    for tau in (0.0, 0.95):
        for T in (0.5, 1.0):
            ablation_trial(exp, {"dataset": "cifar10", "threshold": tau, "pseudo_label": "soft", "T": T}, 1, 90.0)
        ablation_trial(exp, {"dataset": "cifar10", "threshold": tau, "pseudo_label": "hard"}, 1, 91.0)
    view = ablation(read_trials(exp), aggregate(read_trials(exp)))
    assert view["axis"] == "threshold" and view["series_axes"] == ["pseudo_label", "T"]
    assert view["layout"] == "lines"
    assert {p["series"] for p in view["points"]} == {("soft", 0.5), ("soft", 1.0), ("hard", 1.0)}
    assert all(p["n"] == 1 and math.isnan(p["error"]["std"]) for p in view["points"])  # one seed: no std


def test_a_table_ablation_is_categories_labelled_by_what_differs(tmp_path):
    """Augmentation-style: settings from several blocks, each changing one thing from the baseline."""
    from fixmatch_ray.results.aggregate import ablation
    from fixmatch_ray.results.plots import plot_ablation

    exp = tmp_path / "augment"
    ablation_trial(exp, {"dataset": "cifar10", "strong_aug": "full"}, 1, 95.0, policy="ctaugment", aug_backend="tensor")
    ablation_trial(exp, {"dataset": "cifar10", "strong_aug": "no_cutout"}, 1, 93.0, policy="ctaugment",
                   aug_backend="tensor")
    ablation_trial(exp, {"dataset": "cifar10", "anchoring": "weak.weak"}, 1, 80.0, policy="ctaugment",
                   aug_backend="tensor")
    ablation_trial(exp, {"dataset": "cifar10", "policy": "randaugment"}, 1, 94.0)
    view = ablation(read_trials(exp), aggregate(read_trials(exp)))
    assert {view["axis"], *view["series_axes"]} == {"strong_aug", "anchoring", "policy"}
    assert view["layout"] == "categories"
    labels = {p["setting"]: p["label"] for p in view["points"]}
    assert labels == {"cifar10 strong_aug=full": "baseline", "cifar10 strong_aug=no_cutout": "strong_aug=no_cutout",
                      "cifar10 anchoring=weak.weak": "anchoring=weak.weak", "cifar10 policy=randaugment":
                      "policy=randaugment"}
    assert sorted(view["baseline"].split(", ")) == ["anchoring=weak.strong", "policy=ctaugment", "strong_aug=full"]
    assert plot_ablation(view, "augment")[:4] == b"\x89PNG"


def test_no_ablation_view_when_every_trial_has_one_setting(tmp_path, capsys):
    from fixmatch_ray.results.aggregate import ablation

    exp = tmp_path / "one"
    for seed in (1, 2):
        ablation_trial(exp, {"dataset": "cifar10", "threshold": 0.95}, seed, 90.0)
    assert ablation(read_trials(exp), aggregate(read_trials(exp))) is None
    assert main([str(exp)]) == 0
    assert "Error by" not in capsys.readouterr().out and not (exp / "ablation.png").exists()


# the barely supervised design: 4 labeled sets (split_seed) x 4 training seeds, final accuracies
BARELY = {1: [48.0, 50.0, 60.0, 70.0], 2: [62.0, 64.0, 66.0, 85.0], 3: [55.0, 58.0, 63.0, 65.0],
          4: [70.0, 71.0, 72.0, 73.0]}


def test_barely_supervised_median_and_range_per_set_and_overall(tmp_path, capsys):
    """What section 4.4 of the paper reports: per labeled set and over all 16 runs, the median
    and the range of test accuracy, in results.md and results.csv (not only mean ± std)."""
    exp = tmp_path / "barely"
    for k, accs in BARELY.items():
        setting = {"dataset": "cifar10", "num_labeled": 10, "split_seed": k}
        for seed, v in enumerate(accs, start=1):
            fake_trial(exp, f"cifar10@10 split_seed={k}", setting, seed, [v] * 4, total=8, split_seed=k)
    assert main([str(exp), "--no-plots"]) == 0
    md = (exp / "results.md").read_text()
    # per set: the median of 4 is the mean of the middle two
    assert "| cifar10@10 split_seed=1 | 4 | 43.00 ± 10.13 | - | - | 57.00 ± 10.13 | 55.00 [48.00–70.00] |" in md
    assert "| 65.00 [62.00–85.00] |" in md and "| 60.50 [55.00–65.00] |" in md and "| 71.50 [70.00–73.00] |" in md
    # overall, sorted: 48 50 55 58 60 62 63 64 | 65 66 70 70 71 72 73 85 -> median (64 + 65) / 2
    assert "### Over all labeled sets" in md
    assert "| cifar10@10 | 1, 2, 3, 4 | 16 | 64.50 [48.00–85.00] | 64.50 ± 9.30 |" in md
    rows = {r["setting"]: r for r in csv.DictReader((exp / "results.csv").open())}
    assert float(rows["cifar10@10 split_seed=2"]["median20_acc_median"]) == 65.0
    overall = rows["cifar10@10"]
    assert overall["split_seeds"] == "1 2 3 4" and overall["n"] == "16"
    assert [float(overall[f"median20_acc_{k}"]) for k in ("median", "min", "max")] == [64.5, 48.0, 85.0]
    doc = json.loads((exp / "results.json").read_text())
    assert doc["pooled"][0]["median20_acc"]["median"] == 64.5
    # split_seed names labeled sets, not a scale: the ablation view is categories, not a line
    assert doc["ablation"]["axis"] == "split_seed" and doc["ablation"]["layout"] == "categories"


def test_no_pooled_rows_without_several_labeled_sets(experiment):
    from fixmatch_ray.results.aggregate import pooled

    assert pooled(read_trials(experiment)) == []
    assert "Over all labeled sets" not in (report_experiment(experiment, plots=False, quiet=True) and
                                           (experiment / "results.md").read_text())


def test_rows_trained_under_autocast_are_marked_beside_the_paper_column(tmp_path):
    exp = tmp_path / "amp"
    c10 = {"dataset": "cifar10", "num_labeled": 40}
    fake_trial(exp, "cifar10@40", c10, 1, [90.0] * 4, total=8, amp="bf16")
    fake_trial(exp, "cifar10@250", {"dataset": "cifar10", "num_labeled": 250}, 1, [94.0] * 4, total=8)
    report_experiment(exp, plots=False, quiet=True)
    md = (exp / "results.md").read_text()
    assert "| cifar10@40 | 1 | 10.00 | 13.81 ± 3.37 (ours: amp bf16) |" in md
    assert "| cifar10@250 | 1 | 6.00 | 5.07 ± 0.65 | " in md  # fp32, as the paper: no mark
    rows = {r["setting"]: r for r in csv.DictReader((exp / "results.csv").open())}
    assert rows["cifar10@40"]["amp"] == "bf16" and rows["cifar10@250"]["amp"] == "off"


def test_load_fills_an_axis_left_at_its_default(tmp_path):
    """An axis one block sets and another leaves at its default: results.load has every trial's
    resolved value in that column (the run record's), never NaN, so filtering on it works."""
    from fixmatch_ray import results

    exp = tmp_path / "exp"
    fake_trial(exp, "cifar10@40", {"dataset": "cifar10", "num_labeled": 40}, 1, [50.0], total=8)
    fake_trial(exp, "cifar10@40 policy=ctaugment", {"dataset": "cifar10", "num_labeled": 40, "policy": "ctaugment"},
               1, [60.0], total=8, policy="ctaugment")
    df = results.load(str(exp))
    assert df.policy.notna().all()
    assert df[df.policy == "randaugment"].setting.tolist() == ["cifar10@40"]
    assert df[df.policy == "ctaugment"].setting.tolist() == ["cifar10@40 policy=ctaugment"]
