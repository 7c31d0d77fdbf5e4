"""MLflow and W&B for single runs, with the real packages: a local MLflow file store read back with
MLflow's client, an offline W&B run read back with wandb's own reader; one-line errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from readback import pairs_approx, mlflow_runs, wandb_runs

from fixmatch_ray.config import parse_sweep
from fixmatch_ray.train import main

TINY = ["--dataset", "digits", "--num-labeled", "20", "--batch-size", "8", "--mu", "2", "--total-steps", "8",
        "--eval-step", "4", "--seed", "1", "--depth", "10", "--width", "1", "--num-workers", "0", "--no-progress"]


@pytest.fixture
def file_store(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores otherwise
    return (tmp_path / "mlruns").as_uri()


def test_train_logs_to_mlflow_and_wandb(tmp_path, file_store, capsys):
    out = tmp_path / "digits@20.1"
    args = [*TINY, "--out", str(out), "--tracking", "mlflow", "--mlflow-uri", file_store, "--mlflow-experiment",
            "single", "--tracking", "wandb", "--wandb-project", "fixmatch-test", "--wandb-mode", "offline"]
    assert main(args) == 0
    record = json.loads((out / "metrics.json").read_text())
    accs = [(h["step"], h["test_acc"]) for h in record["history"]]
    assert [s for s, _ in accs] == [4, 8]

    (run,) = mlflow_runs(file_store, "single").values()
    assert run["status"] == "FINISHED" and run["tags"]["fixmatch.run"] == str(out)
    assert run["params"]["num_labeled"] == "20" and run["params"]["lr"] == "0.03" and run["params"]["seed"] == "1"
    assert run["history"]["test/acc"] == pairs_approx(accs)  # by training step
    assert [s for s, _ in run["history"]["train/loss"]] == [4, 8]
    for key in ("median20_acc", "best_acc", "last_acc", "evals"):  # the summary, at the last step
        assert run["history"][key] == [(8, pytest.approx(record["summary"][key]))]

    runs = wandb_runs(out)  # mode offline: under the run's directory
    assert list(runs) == ["digits@20.1"]
    wb = runs["digits@20.1"]
    assert wb["project"] == "fixmatch-test" and wb["state"] == "finished"
    assert wb["config"]["num_labeled"] == 20 and wb["config"]["seed"] == 1
    assert [(h["step"], h["test/acc"]) for h in wb["history"]] == pairs_approx(accs)
    assert all(h["_step"] == h["step"] for h in wb["history"])
    for key in ("median20_acc", "best_acc", "last_acc", "evals"):
        assert wb["summary"][key] == pytest.approx(record["summary"][key])


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, file_store):
    """The same run key finds the same MLflow run; params it already has keep their values."""
    from fixmatch_ray.tracking.mlflow import MLflowTracker

    for workers, steps in ((4, (4, 8)), (0, (12,))):
        t = MLflowTracker(file_store, "resumed", run_key="/runs/a", run_name="a")
        t.log_config({"lr": 0.03, "num_workers": workers})
        for s in steps:
            t.log_metrics({"test_acc": float(s)}, s)
        t.close()
    (run,) = mlflow_runs(file_store, "resumed").values()
    assert run["params"] == {"lr": "0.03", "num_workers": "4"}
    assert run["history"]["test/acc"] == [(4, 4.0), (8, 8.0), (12, 12.0)]
    assert run["status"] == "KILLED"  # ended without a summary: interrupted, not finished


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flags, match", [
    (["--mlflow-uri", "x"], "--mlflow-uri needs --tracking mlflow"),
    (["--tracking", "wandb"], "--tracking wandb needs --wandb-project"),
    (["--tracking", "mlflow", "--tracking-config", "t.yaml"], "not both"),
])
def test_bad_tracking_flags_are_one_line(tmp_path, capsys, flags, match):
    assert main([*TINY, "--out", str(tmp_path / "r"), *flags]) == 2
    assert match in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_tracking_config_file_is_strict(tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"wandb": {"project": "p", "mode": "offlne"}}))
    assert main([*TINY, "--out", str(tmp_path / "r"), "--tracking-config", str(cfg)]) == 2
    assert "tracking.wandb.mode: expected one of offline, online, got 'offlne'" in one_line_error(capsys)


def test_mlflow_file_store_refused_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    assert main([*TINY, "--out", str(tmp_path / "r"), "--tracking", "mlflow", "--mlflow-uri", uri]) == 2
    assert "MLFLOW_ALLOW_FILE_STORE=true" in one_line_error(capsys)


@pytest.mark.parametrize("package", ["mlflow", "wandb"])
def test_missing_package_is_one_line(tmp_path, capsys, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # import raises ImportError, as when not installed
    extra = ["--wandb-project", "p"] if package == "wandb" else []
    assert main([*TINY, "--out", str(tmp_path / "r"), "--tracking", package, *extra]) == 2
    assert f"the {package} package is not installed; pip install -e '.[{package}]'" in one_line_error(capsys)


@pytest.mark.parametrize("package", ["mlflow", "wandb"])
def test_sweep_missing_package_is_one_line_before_ray(tmp_path, capsys, monkeypatch, package):
    import fixmatch_ray.launch.cluster as cluster
    import fixmatch_ray.launch.sweep as sweep

    def no_ray(*a, **k):
        raise AssertionError("Ray must not start")

    monkeypatch.setattr(cluster, "ensure_ray", no_ray)
    monkeypatch.setitem(sys.modules, package, None)
    block = {"mlflow": {}} if package == "mlflow" else {"wandb": {"project": "p", "mode": "offline"}}
    doc = {"name": "t", "grid": [{"dataset": "digits", "num_labeled": [20]}], "tracking": block}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert sweep.main([str(path), "--storage", str(tmp_path / "store")]) == 2
    assert f"tracking.{package}: the {package} package is not installed" in one_line_error(capsys)
    assert not (tmp_path / "store" / "t").exists()


GOOD = {"name": "t", "grid": [{"dataset": "digits", "num_labeled": [20]}]}


@pytest.mark.parametrize("block, match", [
    ({"mlflow": {"uri": "x"}}, "tracking: mlflow: unknown key 'uri'; valid keys: experiment, tags, tracking_uri"),
    ({"wandb": {"mode": "offline"}}, "tracking.wandb.project: required"),
    ({"wandb": {"project": "p", "mode": "local"}}, "tracking.wandb.mode: expected one of offline, online"),
    ({"wandb": {"project": "p", "dir": "s3://b/w"}}, "tracking.wandb.dir: 's3://b/w' must be a local directory"),
    ({"mlflow": {"tags": {"team": 1}}}, "tracking.mlflow.tags.team: expected str, got 1"),
    ({"neptune": {}}, "tracking: unknown key 'neptune'; valid keys: mlflow, wandb"),
    ({"mlflow": "sqlite:///x.db"}, "tracking: mlflow: expected a mapping"),
])
def test_bad_tracking_blocks(block, match):
    from fixmatch_ray.config import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_sweep({**GOOD, "tracking": block}, "s.yaml")
    assert str(e.value).startswith("s.yaml: ") and match in str(e.value)


def test_tracking_block_parsed():
    spec = parse_sweep({**GOOD, "tracking": {"mlflow": {"tracking_uri": "sqlite:///m.db"},
                                             "wandb": {"project": "p", "mode": "offline", "tags": ["a"]}}})
    assert spec.tracking.enabled == ["mlflow", "wandb"]
    assert spec.tracking.mlflow.tracking_uri == "sqlite:///m.db" and spec.tracking.mlflow.experiment is None
    assert (spec.tracking.wandb.project, spec.tracking.wandb.mode, spec.tracking.wandb.tags) == ("p", "offline", ["a"])
    assert parse_sweep({**GOOD, "tracking": None}).tracking.enabled == []
    assert parse_sweep(GOOD).tracking.enabled == []


def test_sweep_file_example_in_readme_parses():
    """The README's tracking block is a valid sweep-file block."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("    tracking:\n")
    lines = []
    for line in readme[start:].splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    block = yaml.safe_load("\n".join(lines))["tracking"]
    assert parse_sweep({**GOOD, "tracking": block}).tracking.enabled


class FakeTrial:
    """What Tune's logger callbacks read of a trial (a Tune Trial needs a running experiment)."""

    def __init__(self, trial_id: str, experiment: str, local_path: str = ""):
        run = {"total_steps": 12, "lr": 0.03, "seed": 1, "num_labeled": 20}
        self.trial_id, self.local_path, self.experiment_dir_name = trial_id, local_path, "smoke"
        self.config = {"trial": {"name": "digits@20.s1", "label": "digits@20", "experiment": experiment, "run": run}}
        self.last_result: dict = {}

    def __str__(self) -> str:
        return f"digits@20.s1_{self.trial_id}"


def report(callback, trial, step: int) -> None:
    result = {"step": step, "test_acc": float(step), "training_iteration": step // 4,
              "median20_acc": float(step), "best_acc": float(step), "last_acc": float(step), "evals": step // 4}
    trial.last_result = result
    callback.log_trial_result(step // 4, trial, result)


def test_mlflow_callback_retry_and_driver_restart_continue_one_run(tmp_path, file_store):
    """Ray's MLflowLoggerCallback as the sweep wires it: a trial that fails and is retried, then a
    new driver (a restored sweep) that finishes it, all land in one MLflow run, by training step."""
    from fixmatch_ray.config.tracking import MLflowSpec
    from fixmatch_ray.launch.trackers import StepMLflowLogger

    spec = MLflowSpec(tracking_uri=file_store)
    first = StepMLflowLogger(spec, "smoke")
    first.setup()
    trial = FakeTrial("abc_00000", str(tmp_path / "smoke"))
    first.log_trial_start(trial)
    report(first, trial, 4)
    first.log_trial_end(trial, failed=True)
    first.log_trial_start(trial)  # Tune retries it
    report(first, trial, 8)
    second = StepMLflowLogger(spec, "smoke")  # the driver died; the rerun command restores the sweep
    second.setup()
    second.log_trial_start(trial)
    report(second, trial, 12)
    second.log_trial_end(trial, failed=False)
    (run,) = mlflow_runs(file_store, "smoke").values()
    assert run["status"] == "FINISHED" and run["tags"]["trial_id"] == "abc_00000"
    assert run["tags"]["fixmatch.run"] == str(tmp_path / "smoke" / "train" / "digits@20.s1-abc_00000")
    assert run["history"]["test/acc"] == [(4, 4.0), (8, 8.0), (12, 12.0)]
    assert run["history"]["median20_acc"] == [(12, 12.0)]  # the summary, once: the trial finished
    assert "training_iteration" not in run["history"]
    assert run["params"]["setting"] == "digits@20" and run["params"]["lr"] == "0.03"
