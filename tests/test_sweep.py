"""The sweep service: strict sweep files, a real smoke sweep, SIGINT + resume."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fixmatch_ray.config import parse_sweep
from fixmatch_ray.results.read import read_trials
from fixmatch_ray.sweep import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.yaml"


def write(tmp_path: Path, doc, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return p


GOOD = {"name": "t", "grid": [{"dataset": "digits", "num_labeled": [20]}], "seeds": [1]}


def test_grid_expansion():
    doc = {"name": "g", "base": {"total_steps": 10},
           "grid": [{"dataset": "cifar10", "num_labeled": [40, 250], "wdecay": 5e-4},
                    {"dataset": "cifar100", "num_labeled": [400], "wdecay": 1e-3}],
           "seeds": [1, 2], "axes": {"lambda_u": [1.0, 0.0]}}
    spec = parse_sweep(doc)
    assert len(spec.trials) == (2 + 1) * 2 * 2
    c100 = [t for t in spec.trials if t.run.dataset == "cifar100"]
    assert all(t.run.wdecay == 1e-3 and (t.run.depth, t.run.width) == (28, 8) for t in c100)
    assert {t.label for t in spec.trials} >= {"cifar10@40 lambda_u=1.0", "cifar100@400 lambda_u=0.0"}
    assert all(t.run.total_steps == 10 for t in spec.trials)
    assert sorted({t.seed for t in spec.trials}) == [1, 2]


def test_paper_grid():
    from fixmatch_ray.config import load_sweep

    spec = load_sweep(ROOT / "sweeps" / "paper.yaml")
    assert len(spec.trials) == 6 * 5
    for t in spec.trials:
        assert t.run.total_steps == 2**20 and t.run.eval_step == 1024
        assert (t.run.batch_size, t.run.mu, t.run.lr, t.run.threshold, t.run.ema_decay) == (64, 7, 0.03, 0.95, 0.999)
        if t.run.dataset == "cifar10":
            assert (t.run.depth, t.run.width, t.run.wdecay) == (28, 2, 5e-4)
            assert t.run.num_labeled in (40, 250, 4000)
        else:
            assert (t.run.depth, t.run.width, t.run.wdecay) == (28, 8, 1e-3)
            assert t.run.num_labeled in (400, 2500, 10000)


BAD = [
    ("name: [unclosed\n", "malformed YAML at line"),
    ("- just\n- a list\n", "expected a mapping"),
    ({**GOOD, "nmae": "x"}, "unknown key 'nmae'"),
    ({"grid": GOOD["grid"]}, "'name' and 'grid' are required"),
    ({**GOOD, "name": "a/b"}, "name: 'a/b' must be"),
    ({**GOOD, "grid": []}, "grid: is empty"),
    ({**GOOD, "seeds": [1, 1]}, "repeats a seed"),
    ({**GOOD, "seeds": "1"}, "seeds: expected a list"),
    ({**GOOD, "grid": [{"dataset": "mnist", "num_labeled": [20]}]}, "grid[0]: dataset: unknown 'mnist'"),
    ({**GOOD, "grid": [{"dataset": "digits", "num_labeled": [25]}]}, "grid[0]: num_labeled: 25 is not divisible"),
    ({**GOOD, "grid": [{"dataset": "digits", "num_labeled": [-10]}]}, "num_labeled: must be a positive"),
    ({**GOOD, "grid": [{"dataset": "digits", "num_labeled": [20], "lr": "high"}]}, "lr: expected float"),
    ({**GOOD, "grid": [{"dataset": "digits", "num_labeled": [20], "arch": "vit"}]}, "arch: unknown 'vit'"),
    ({**GOOD, "base": {"learning_rate": 0.1}}, "unknown key 'learning_rate'"),
    ({**GOOD, "axes": {"lambda_u": 0.0}}, "axes.lambda_u: expected a list, got 0.0"),
    ({**GOOD, "resources": {"workers": 3}}, "digits@20: batch_size = 64 is not divisible by 3 DDP workers"),
    ({**GOOD, "resources": {"gpus": 1}}, "unknown key 'gpus'"),
    ({**GOOD, "resources": {"gpus_per_worker": 1.5}}, "gpus_per_worker: expected 0, a fraction"),
    ({**GOOD, "max_concurrent_trials": 0}, "max_concurrent_trials: expected a positive integer"),
    ({**GOOD, "grid": [{"dataset": "digits", "num_labeled": [20], "seed": 3}]}, "'seed' belongs in the top-level"),
]


@pytest.mark.parametrize("doc, match", BAD, ids=[m for _, m in BAD])
def test_bad_sweep_files_are_one_clear_line(tmp_path, capsys, doc, match):
    path = write(tmp_path, doc)
    assert main([str(path), "--storage", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and match in err and "\n" not in err, err
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_missing_sweep_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unwritable_storage(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([str(write(tmp_path, GOOD)), "--storage", str(blocker / "sub")]) == 2
    assert "storage: cannot write to" in capsys.readouterr().err


@pytest.mark.ray
def test_impossible_resources_fail_up_front(ray_session, tmp_path, capsys):
    doc = {**GOOD, "resources": {"gpus_per_worker": 1}}
    assert main([str(write(tmp_path, doc)), "--storage", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert "a trial needs 1 GPU" in err and "the cluster has 0" in err
    assert not (tmp_path / "store" / "t").exists()


def steps(trial) -> list[int]:
    return [h["step"] for h in trial.history]


@pytest.mark.ray
def test_smoke_sweep_end_to_end(ray_session, tmp_path, capsys):
    assert main([str(SMOKE), "--storage", str(tmp_path)]) == 0
    exp = tmp_path / "smoke"
    trials = read_trials(exp)
    assert len(trials) == 2 and all(t.status == "finished" for t in trials)
    assert all(steps(t) == [4, 8, 12] for t in trials)
    assert all(t.final["world_size"] == 2 for t in trials)
    table = (exp / "results.md").read_text()
    assert "| digits@20 | 2 |" in table and "digits@20 | 2 |" in capsys.readouterr().out
    tb = list((exp / "train").glob("*/tensorboard/events.*"))
    assert len(tb) == 2
    # the report at the end, from the real result files
    doc = json.loads((exp / "results.json").read_text())
    (row,) = doc["settings"]
    assert row["n"] == 2 and row["seeds"] == [1, 2] and row["paper_error"] is None
    finals = [t.final["median20_acc"] for t in trials]
    assert row["median20_acc"]["mean"] == pytest.approx(sum(finals) / 2)
    assert all((exp / f).is_file() for f in ("results.csv", "results.tex", "acc_vs_step.png", "mask_vs_step.png"))
    # re-running a finished experiment resumes it and reruns nothing
    records = {p: p.read_text() for p in exp.glob("train/*/metrics.json")}
    assert len(records) == 2
    assert main([str(SMOKE), "--storage", str(tmp_path), "--no-report"]) == 0
    assert {p: p.read_text() for p in exp.glob("train/*/metrics.json")} == records
