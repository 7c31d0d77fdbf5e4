"""One real smoke sweep (2 trials x 2 DDP workers, 3 evaluations each) with a tracking block, read
back with each tool's own reader: MLflow's client, W&B's offline reader, TensorBoard's event
multiplexer, and the notebook API (``fixmatch_ray.results``) on a local path and an s3:// URI."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from readback import pairs_approx, mlflow_runs, wandb_runs

from fixmatch_ray import results
from fixmatch_ray.results.read import read_trials
from fixmatch_ray.sweep import main
from fixmatch_ray.training.engine import summarize

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ("median20_acc", "best_acc", "last_acc", "evals")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def swept(ray_session, tmp_path_factory):
    """The smoke sweep with MLflow (local file store) and W&B (offline) on, run once."""
    tmp = tmp_path_factory.mktemp("eco")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores otherwise
    uri = (tmp / "mlruns").as_uri()
    doc = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    doc["tracking"] = {"mlflow": {"tracking_uri": uri}, "wandb": {"project": "fixmatch-test", "mode": "offline"}}
    sweep_file = tmp / "smoke.yaml"
    sweep_file.write_text(yaml.safe_dump(doc))
    assert main([str(sweep_file), "--storage", str(tmp / "store")]) == 0
    yield {"exp": tmp / "store" / "smoke", "mlflow": uri, "trials": read_trials(tmp / "store" / "smoke")}
    mp.undo()


def by_name(trials):
    assert len(trials) == 2 and all(t.status == "finished" for t in trials)
    return {t.name: t for t in trials}


def test_mlflow_one_run_per_trial_by_training_step(swept):
    trials = by_name(swept["trials"])
    runs = mlflow_runs(swept["mlflow"], "smoke")  # experiment: the sweep's name
    assert set(runs) == set(trials)
    for name, run in runs.items():
        t = trials[name]
        assert run["status"] == "FINISHED"
        assert run["params"]["seed"] == str(t.seed) and run["params"]["num_labeled"] == "20"
        assert run["params"]["setting"] == "digits@20" and run["params"]["total_steps"] == "12"
        # the run's key: its Train run directory, <experiment>/train/<trial name>-<trial id>
        key = run["tags"]["fixmatch.run"]
        assert key.startswith(str(swept["exp"] / "train" / f"{name}-")) and Path(key, "metrics.json").is_file()
        # every evaluation at its training step (4, 8, 12), not Tune's iteration (1, 2, 3)
        assert run["history"]["test_acc"] == pairs_approx([(h["step"], h["test_acc"]) for h in t.history])
        assert [s for s, _ in run["history"]["train_mask"]] == [4, 8, 12]
        for key, value in summarize(t.history).items():  # the final summary: the values at the last step
            assert run["history"][key][-1] == (12, pytest.approx(value))
        assert run["history"]["evals"] == [(12, 3.0)]  # logged once, when the trial finished
        assert set(SUMMARY) <= set(run["history"])
        assert not any(k.startswith(("config", "trial", "time_", "training_iteration")) for k in run["history"])


def test_wandb_offline_runs_by_training_step(swept):
    trials = by_name(swept["trials"])
    runs = wandb_runs(swept["exp"])  # offline runs are kept in the experiment directory
    assert set(runs) == set(trials)
    for name, run in runs.items():
        t = trials[name]
        assert run["project"] == "fixmatch-test" and run["state"] == "finished"
        assert run["config"]["seed"] == t.seed and run["config"]["setting"] == "digits@20"
        assert [(h["step"], h["test_acc"]) for h in run["history"]] == pairs_approx(
            [(h["step"], h["test_acc"]) for h in t.history])
        assert {k: run["summary"][k] for k in SUMMARY} == pytest.approx(summarize(t.history))


def test_tensorboard_one_scalar_run_per_trial(swept):
    """TensorBoard's own reader over the whole experiment: one run of scalars per trial (Train's,
    step = training step; no Tune copy by iteration), plus the HParams view."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(swept["exp"]))
    mux.Reload()
    runs = {run: tags["scalars"] for run, tags in mux.Runs().items() if tags.get("scalars")}
    scalar_runs = {run: tags for run, tags in runs.items() if not run.startswith("hparams/")}  # HParams aside
    trials = by_name(swept["trials"])
    assert len(scalar_runs) == len(trials), sorted(scalar_runs)
    for run in scalar_runs:
        name = Path(run).parts[1].rsplit("-", 1)[0]  # train/<trial name>-<trial id>/tensorboard
        assert [e.step for e in mux.Scalars(run, "test_acc")] == [h["step"] for h in trials[name].history]
        assert [e.value for e in mux.Scalars(run, "test_acc")] == pytest.approx(
            [h["test_acc"] for h in trials[name].history])
    hparams = mux.PluginRunToTagToContent("hparams")
    assert {Path(r).parts[1] for r in hparams} == set(trials)


def test_results_load_and_summary(swept):
    trials = by_name(swept["trials"])
    df = results.load(str(swept["exp"]))
    assert len(df) == 6  # 2 trials x 3 evaluations
    assert {"setting", "dataset", "num_labeled", "seed", "status", "step", "test_acc", "median20_acc"} <= set(df)
    assert sorted(df.seed.unique()) == [1, 2] and set(df.num_labeled) == {20} and set(df.dataset) == {"digits"}
    for name, t in trials.items():
        mine = df[df.seed == t.seed].sort_values("step")
        assert mine.step.tolist() == [4, 8, 12]
        assert mine.test_acc.tolist() == pytest.approx([h["test_acc"] for h in t.history])
    table = results.summary(str(swept["exp"]))
    assert len(table) == 1
    row = table.iloc[0]
    finals = [t.final["median20_acc"] for t in trials.values()]
    assert row.setting == "digits@20" and row.n == 2 and row.seeds == [1, 2]
    assert row.median20_acc_mean == pytest.approx(sum(finals) / 2)
    assert row.error_mean == pytest.approx(100 - sum(finals) / 2)
    assert row.median20_acc_std == pytest.approx(abs(finals[0] - finals[1]) / 2 ** 0.5)  # sample std of two


def test_results_load_from_a_uri(swept, s3_env):
    """The same frames from a copy of the experiment on (moto's) S3."""
    import pyarrow.fs

    uri = f"{s3_env.uri()}/smoke"
    pyarrow.fs.copy_files(str(swept["exp"] / "train"), f"{uri}/train")
    local = results.load(str(swept["exp"])).sort_values(["seed", "step"]).reset_index(drop=True)
    remote = results.load(uri).sort_values(["seed", "step"]).reset_index(drop=True)
    assert len(remote) == 6
    assert remote[["seed", "step", "test_acc"]].equals(local[["seed", "step", "test_acc"]])
    assert results.summary(uri).median20_acc_mean.tolist() == pytest.approx(
        results.summary(str(swept["exp"])).median20_acc_mean.tolist())


def test_train_on_ray_workers_logs_from_rank_0(ray_session, tmp_path, monkeypatch):
    """train --ddp-workers 2 --tracking ...: one MLflow run and one W&B run (rank 0's), by step; the
    driver's MLFLOW_* settings reach the worker."""
    from test_tracking import TINY

    from fixmatch_ray.train import main as train

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    out = tmp_path / "ddp"
    assert train([*TINY, "--out", str(out), "--ddp-workers", "2", "--tracking", "mlflow", "--mlflow-uri", uri,
                  "--tracking", "wandb", "--wandb-project", "fixmatch-test", "--wandb-mode", "offline"]) == 0
    record = __import__("json").loads((out / "metrics.json").read_text())
    accs = [(h["step"], h["test_acc"]) for h in record["history"]]
    (run,) = mlflow_runs(uri, "fixmatch").values()
    assert run["status"] == "FINISHED" and run["history"]["test_acc"] == pairs_approx(accs)
    assert run["history"]["median20_acc"][-1] == (8, pytest.approx(record["summary"]["median20_acc"]))
    (wb,) = wandb_runs(out).values()
    assert [(h["step"], h["test_acc"]) for h in wb["history"]] == pairs_approx(accs)
