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
    assert run["history"]["test_acc"] == pairs_approx(accs)  # by training step, under the record's name
    assert [s for s, _ in run["history"]["train_loss"]] == [4, 8]
    assert set(run["history"]) == {k for k, v in record["history"][0].items() if isinstance(v, float)} - {
        "wall_time"} | {"last_acc", "evals"} | {f"test_class_acc/{c}" for c in range(10)}  # one name per
    # number (per class: one each); the summary's own two beside them
    for key in ("median20_acc", "best_acc", "last_acc", "evals"):  # the summary: the value at the last step
        assert run["history"][key][-1] == (8, pytest.approx(record["summary"][key]))
    assert run["history"]["evals"] == [(8, 2.0)]  # logged once

    runs = wandb_runs(out)  # mode offline: under the run's directory
    assert list(runs) == ["digits@20.1"]
    wb = runs["digits@20.1"]
    assert wb["project"] == "fixmatch-test" and wb["state"] == "finished"
    assert wb["config"]["num_labeled"] == 20 and wb["config"]["seed"] == 1
    assert [(h["step"], h["test_acc"]) for h in wb["history"]] == pairs_approx(accs)
    assert all(h["_step"] == h["step"] for h in wb["history"])
    for key in ("median20_acc", "best_acc", "last_acc", "evals"):
        assert wb["summary"][key] == pytest.approx(record["summary"][key])


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, file_store):
    """The same run key finds the same MLflow run; params it already has keep their values."""
    from fixmatch_ray.tracking import TrackedRun
    from fixmatch_ray.tracking.mlflow import MLflowOptions, MLflowTracker

    for workers, steps in ((4, (4, 8)), (0, (12,))):
        t = MLflowTracker(MLflowOptions(file_store, "resumed"), TrackedRun(key="/runs/a", name="a"))
        t.log_config({"lr": 0.03, "num_workers": workers})
        for s in steps:
            t.log_metrics({"test_acc": float(s)}, s)
        t.close()
    (run,) = mlflow_runs(file_store, "resumed").values()
    assert run["params"] == {"lr": "0.03", "num_workers": "4"}
    assert run["history"]["test_acc"] == [(4, 4.0), (8, 8.0), (12, 12.0)]
    assert run["status"] == "KILLED"  # ended without a summary: interrupted, not finished


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flags, match", [
    (["--mlflow-uri", "x"], "--mlflow-uri needs --tracking mlflow"),
    (["--tracking", "wandb"], "tracking.wandb.project: required"),
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
    ({"neptune": {}}, "tracking: unknown tracker 'neptune'; expected one of mlflow, wandb"),
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
    from fixmatch_ray.tracking.mlflow import MLflowOptions
    from fixmatch_ray.tracking.wandb import WandbOptions

    assert spec.tracking.enabled == ["mlflow", "wandb"]
    mlflow, wandb = spec.tracking.trackers["mlflow"], spec.tracking.trackers["wandb"]
    assert mlflow == MLflowOptions(tracking_uri="sqlite:///m.db") and mlflow.experiment is None
    assert isinstance(wandb, WandbOptions) and (wandb.project, wandb.mode, wandb.tags) == ("p", "offline", ["a"])
    assert spec.tracking.to_dict()["wandb"]["tags"] == ["a"]  # what a trial's config carries
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


def test_one_tracker_run_across_attempts_and_drivers(tmp_path, file_store):
    """What a retried trial and a restarted sweep driver do to a trial's trackers: a new rank 0 (new
    process, new tracker objects) with the same run key. MLflow finds its run again by the key's tag,
    W&B takes the same run id; the failed attempt leaves no summary, the last one does."""
    from fixmatch_ray.tracking import TrackedRun
    from fixmatch_ray.tracking.mlflow import MLflowOptions, MLflowTracker
    from fixmatch_ray.tracking.wandb import WandbOptions, WandbTracker, run_id

    run = TrackedRun(key=str(tmp_path / "smoke" / "train" / "digits@20.s1-abc_00000"), name="digits@20.s1",
                     group="smoke", local_dir=str(tmp_path))
    wandb_options = WandbOptions(project="fixmatch-test", mode="offline")
    for steps, finished in (((4,), False), ((8,), False), ((12,), True)):  # failed, retried, restored
        trackers = [MLflowTracker(MLflowOptions(file_store), run), WandbTracker(wandb_options, run)]
        for t in trackers:
            t.log_config({"lr": 0.03, "setting": "digits@20"})
            for s in steps:
                t.log_metrics({"step": s, "test_acc": float(s), "median20_acc": float(s)}, s)
            if finished:
                t.log_summary({"median20_acc": 12.0, "best_acc": 12.0, "last_acc": 12.0, "evals": 3})
            t.close()
    (mlflow,) = mlflow_runs(file_store, "smoke").values()  # the experiment: the sweep's name
    assert mlflow["status"] == "FINISHED" and mlflow["tags"]["fixmatch.run"] == run.key
    assert mlflow["history"]["test_acc"] == [(4, 4.0), (8, 8.0), (12, 12.0)]
    assert mlflow["history"]["median20_acc"] == [(4, 4.0), (8, 8.0), (12, 12.0)]  # the summary's equal: once
    assert mlflow["history"]["evals"] == [(12, 3.0)] and "step" not in mlflow["history"]
    assert mlflow["params"] == {"lr": "0.03", "setting": "digits@20"}
    from readback import wandb_run

    dirs = sorted((tmp_path / "wandb").glob("offline-run-*"), key=lambda d: d.stat().st_mtime)
    assert len(dirs) == 3 and all(f"-{run_id(run.key)}" in d.name for d in dirs)  # one run id
    runs = [wandb_run(d) for d in dirs]
    assert [(h["step"], h["test_acc"]) for r in runs for h in r["history"]] == [(4, 4.0), (8, 8.0), (12, 12.0)]
    assert runs[-1]["summary"]["evals"] == 3 and runs[-1]["config"]["setting"] == "digits@20"
    assert all("evals" not in r["summary"] for r in runs[:-1])  # no summary for the unfinished attempts
