"""The sweep service: strict sweep files, a real smoke sweep, SIGINT + resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fixmatch_ray.config import ConfigError, parse_sweep
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


def test_algorithm_options_are_grid_axes():
    """Any option of a block's algorithm is an axis; each trial's run carries its value, and a key the
    block's algorithm does not have is one line naming the block."""
    spec = parse_sweep({**GOOD, "grid": [
        {"dataset": "digits", "num_labeled": [20], "threshold": [0.5, 0.9]},
        {"dataset": "digits", "num_labeled": [20], "algorithm": "flexmatch", "flex_mapping": ["linear", "concave"]}]})
    got = {t.label: (t.run.algorithm, t.run.options.threshold, getattr(t.run.options, "flex_mapping", None))
           for t in spec.trials}
    assert got == {"digits@20 threshold=0.5": ("fixmatch", 0.5, None), "digits@20 threshold=0.9": ("fixmatch", 0.9, None),
                   "digits@20 flex_mapping=linear": ("flexmatch", 0.95, "linear"),
                   "digits@20 flex_mapping=concave": ("flexmatch", 0.95, "concave")}
    with pytest.raises(ConfigError, match=r"^s\.yaml: grid\[0\]: 'flex_mapping' is an option of flexmatch, not of "
                                          r"algorithm fixmatch; valid keys: "):
        parse_sweep({**GOOD, "base": {"flex_mapping": "linear"}}, "s.yaml")


def test_paper_grid():
    from fixmatch_ray.config import load_sweep

    spec = load_sweep(ROOT / "sweeps" / "paper.yaml")
    assert len(spec.trials) == 6 * 5
    for t in spec.trials:
        assert t.run.total_steps == 2**20 and t.run.eval_step == 1024
        assert (t.run.batch_size, t.run.mu, t.run.lr, t.run.options.threshold, t.run.ema_decay) == (64, 7, 0.03, 0.95, 0.999)
        if t.run.dataset == "cifar10":
            assert (t.run.depth, t.run.width, t.run.wdecay) == (28, 2, 5e-4)
            assert t.run.num_labeled in (40, 250, 4000)
        else:
            assert (t.run.depth, t.run.width, t.run.wdecay) == (28, 8, 1e-3)
            assert t.run.num_labeled in (400, 2500, 10000)



@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_sweep_file_loads(path):
    from fixmatch_ray.config import load_sweep

    assert load_sweep(path).trials


# Table 2 of the paper (rows FixMatch (RA) and (CTA)): "RA | CTA" error %, per dataset and label count
TABLE2 = """
cifar10 40 13.81 3.37 11.39 3.35 | cifar10 250 5.07 0.65 5.07 0.33 | cifar10 4000 4.26 0.05 4.31 0.15
cifar100 400 48.85 1.75 49.95 3.01 | cifar100 2500 28.29 0.11 28.64 0.24 | cifar100 10000 22.60 0.12 23.18 0.11
svhn 40 3.96 2.17 7.65 7.65 | svhn 250 2.48 0.38 2.64 0.64 | svhn 1000 2.28 0.11 2.36 0.19
stl10 1000 7.98 1.50 5.17 0.63
"""


def test_table2_grid_covers_every_cell_with_both_policies():
    from fixmatch_ray.config import load_sweep
    from fixmatch_ray.results.paper import PAPER_ERROR, paper_reference

    cells = {}
    for cell in TABLE2.replace("\n", " | ").split("|"):
        if cell.strip():
            ds, n, ra, ra_sd, cta, cta_sd = cell.split()
            cells[("fixmatch", "randaugment", ds, int(n))] = (float(ra), float(ra_sd))
            cells[("fixmatch", "ctaugment", ds, int(n))] = (float(cta), float(cta_sd))
    assert len(cells) == 20 and PAPER_ERROR == cells
    spec = load_sweep(ROOT / "sweeps" / "table2.yaml")
    assert len(spec.trials) == 20 * 5
    got = {}
    for t in spec.trials:
        key = (t.run.algorithm, t.run.policy, t.run.dataset, t.run.num_labeled)
        got.setdefault(key, []).append(t.seed)
        assert paper_reference(t.setting, t.run.to_dict()) == cells[key]
        assert (t.run.total_steps, t.run.eval_step, t.run.batch_size, t.run.mu) == (2**20, 1024, 64, 7)
        assert (t.run.lr, t.run.options.threshold, t.run.ema_decay, t.run.aug_backend) == (0.03, 0.95, 0.999, "tensor")
        shape = {"cifar10": (28, 2, None, 5e-4), "cifar100": (28, 8, None, 1e-3), "svhn": (28, 2, None, 5e-4),
                 "stl10": (46, 2, 5, 5e-4)}[t.run.dataset]
        assert (t.run.depth, t.run.width, t.run.scales, t.run.wdecay) == shape
    assert set(got) == set(cells) and all(sorted(s) == [1, 2, 3, 4, 5] for s in got.values())


def test_barely_supervised_plans_16_trials_over_4_labeled_sets():
    """The paper's section 4.4 design: 4 one-label-per-class sets (split_seed, the official
    cifar10.k@10) x 4 training runs each (seeds), so the spread between sets is apart from the
    spread within one."""
    from fixmatch_ray.config import load_sweep
    from fixmatch_ray.data.splits import split_by_distribution
    from fixmatch_ray.results.paper import paper_reference

    spec = load_sweep(ROOT / "sweeps" / "barely.yaml")
    assert len(spec.trials) == 16
    for t in spec.trials:
        assert (t.run.dataset, t.run.num_labeled, t.run.policy, t.run.aug_backend, t.run.amp) == \
            ("cifar10", 10, "ctaugment", "tensor", "off")
        assert paper_reference(t.setting, t.run.to_dict()) is None  # a figure in the paper, no table cell
    by_set: dict[int, set[int]] = {}
    for t in spec.trials:
        by_set.setdefault(t.run.labeled_split_seed, set()).add(t.seed)
    assert by_set == {k: {1, 2, 3, 4} for k in (1, 2, 3, 4)}
    assert len({t.label for t in spec.trials}) == 4  # one setting per labeled set: the report's rows
    # the 4 split seeds are 4 different one-label-per-class sets (on CIFAR-like balanced targets)
    targets = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 50))
    sets = {tuple(split_by_distribution(targets, 10, k)) for k in by_set}
    assert len(sets) == 4 and all(sorted(targets[list(s)]) == list(range(10)) for s in sets)


def test_quick_demo_has_randaugment_ctaugment_and_supervised():
    from fixmatch_ray.config import load_sweep

    spec = load_sweep(ROOT / "sweeps" / "quick.yaml")
    kinds = {(t.run.policy, t.run.aug_backend, t.run.options.lambda_u) for t in spec.trials}
    # randaugment on auto: PIL on the CPU the demo runs on, the device path on a GPU
    assert kinds == {("randaugment", "auto", 1.0), ("ctaugment", "tensor", 1.0), ("randaugment", "auto", 0.0)}
    assert {t.run.dataset for t in spec.trials} == {"digits"}

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
    ({**GOOD, "grid": [{"dataset": "digits", "num_labeled": [1500]}]}, "grid[0]: num_labeled: digits spreads labels"),
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
    # Ray Train assigns devices: a device key would be ignored (cuda:7 on a CPU-only machine trained on the CPU)
    ({**GOOD, "base": {"device": "cuda:7"}}, "base.device: a sweep's resources decide its trials' devices"),
    ({**GOOD, "grid": [{"dataset": "digits", "num_labeled": [20], "device": "cpu"}]}, "grid[0].device: a sweep's resources"),
    ({**GOOD, "axes": {"device": ["cpu", "cuda"]}}, "axes.device: a sweep's resources decide"),
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
    assert all((exp / f).is_file() for f in ("results.csv", "results.tex", "acc_vs_step.png", "train_mask_vs_step.png"))
    # re-running a finished experiment resumes it and reruns nothing
    records = {p: p.read_text() for p in exp.glob("train/*/metrics.json")}
    assert len(records) == 2
    assert main([str(SMOKE), "--storage", str(tmp_path), "--no-report"]) == 0
    assert {p: p.read_text() for p in exp.glob("train/*/metrics.json")} == records
