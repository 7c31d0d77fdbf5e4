"""Extensions from other installed packages (:mod:`fixmatch_ray.plugins`): the registries read
entry points, a broken plugin is one line, and the README's four examples (``examples/plugins``),
each built and installed as a real package of its own, run through ``train`` and a sweep."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixmatch_ray.algorithms import ALGORITHMS
from fixmatch_ray.data.datasets import DATASETS
from fixmatch_ray.data.policies import POLICIES
from fixmatch_ray.plugins import PluginError
from fixmatch_ray.tracking import TRACKERS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "plugins"
REGISTRIES = (ALGORITHMS, DATASETS, POLICIES, TRACKERS)


def reload_registries() -> None:
    for registry in REGISTRIES:
        registry.reload()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on this process's import path for fake distributions; the registries forget
    what they read from it afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    reload_registries()
    yield tmp_path
    monkeypatch.undo()
    reload_registries()


def fake_dist(site: Path, name: str, group: str, entry: str) -> None:
    """An installed distribution that declares one entry point (what pip leaves in site-packages)."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")


def test_a_plugin_that_fails_to_import_is_one_line_naming_it_and_its_entry_point(site, capsys):
    fake_dist(site, "broken", "fixmatch_ray.algorithms", "broken = no_such_module:Broken")
    with pytest.raises(PluginError) as e:
        ALGORITHMS.names()
    assert str(e.value) == ("algorithm plugin 'broken' (entry point fixmatch_ray.algorithms: broken = "
                            "no_such_module:Broken) failed to import: ModuleNotFoundError: No module named "
                            "'no_such_module'")
    from fixmatch_ray.train import main

    assert main(["--dataset", "digits", "--num-labeled", "20"]) == 2  # the CLI: that line, no traceback
    err = capsys.readouterr().err.strip()
    assert err == f"error: {e.value}"


@pytest.mark.parametrize("group, entry, problem", [
    ("fixmatch_ray.datasets", "notaspec = json:loads", "expected a fixmatch_ray.data.datasets.DatasetSpec"),
    ("fixmatch_ray.algorithms", "fixmatch = fixmatch_ray.algorithms:FlexMatch", "the name 'fixmatch' is taken"),
    ("fixmatch_ray.policies", "other = fixmatch_ray.data.policies:RandAugment",
     "its name is 'randaugment'; the entry point must carry the same name"),
    ("fixmatch_ray.trackers", "t = fixmatch_ray.tracking.base:TrackedRun",
     "expected a subclass of fixmatch_ray.tracking.base.Tracker"),
])
def test_a_plugin_of_the_wrong_kind_or_name_is_one_line(site, group, entry, problem):
    fake_dist(site, "odd", group, entry)
    registry = {"datasets": DATASETS, "algorithms": ALGORITHMS, "policies": POLICIES,
                "trackers": TRACKERS}[group.split(".")[1]]
    with pytest.raises(PluginError, match=re.escape(problem)) as e:
        list(registry)
    assert f"(entry point {group}: {entry})" in str(e.value) and "\n" not in str(e.value)


# -- the README's examples, installed as packages -------------------------------------------------
EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*/*") if p.suffix in (".py", ".toml"))


def test_plugin_examples_are_the_readme_text():
    """Each example file appears whole in the README's "Extending" section, under its path."""
    readme = (ROOT / "README.md").read_text()
    assert len(EXAMPLE_FILES) == 8
    for path in EXAMPLE_FILES:
        rel = path.relative_to(ROOT).as_posix()
        lang = "python" if path.suffix == ".py" else "toml"
        block = re.search(rf"`{re.escape(rel)}`[^\n]*\n\n```{lang}\n(.*?)```\n", readme, re.S)
        assert block, f"README has no {lang} block under `{rel}`"
        assert block.group(1) == path.read_text(), rel


@pytest.fixture(scope="module")
def installed(plugin_site, tmp_path_factory):
    """The four examples, each built as its own package and installed with pip (no index, no deps)
    into the session's plugin directory."""
    src = tmp_path_factory.mktemp("plugin-src")
    dirs = [shutil.copytree(d, src / d.name) for d in sorted(EXAMPLES.iterdir()) if d.is_dir()]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(plugin_site), *map(str, dirs)],
                   check=True, timeout=600, capture_output=True)
    reload_registries()
    yield plugin_site
    reload_registries()


PLUGIN_RUN = {"algorithm": "entmin", "unlabeled_view": "strong", "dataset": "bars", "policy": "invert",
              "num_labeled": 8, "batch_size": 4, "mu": 2, "total_steps": 6, "eval_step": 3, "num_workers": 0}
METRICS = ("train_total", "train_ce", "train_entropy")  # EntMin's, not FixMatch's


@pytest.fixture(scope="module")
def trained(installed, tmp_path_factory):
    """``python -m fixmatch_ray.train`` in a fresh process that finds the four plugins installed:
    EntMin (its option as a flag) on bars with the invert policy (per image, PIL) and the jsonl tracker."""
    tmp = tmp_path_factory.mktemp("plugin-train")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in PLUGIN_RUN.items()]
    out = tmp / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "fixmatch_ray.train", *flags, "--entropy-weight", "0.3",
                           "--seed", "1", "--device", "cpu", "--tracking", "jsonl", "--jsonl-dir", str(tmp),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "stderr": proc.stderr, "record": json.loads((out / "metrics.json").read_text()),
            "jsonl": tmp / "run.jsonl"}


@pytest.fixture(scope="module")
def swept(installed, ray_session, tmp_path_factory):
    """One sweep of 2 trials over EntMin's option as a grid axis, all four plugins at once, the
    policy on the device path (its tensor backend)."""
    from fixmatch_ray.sweep import main

    tmp = tmp_path_factory.mktemp("plugin-sweep")
    doc = {"name": "plugins", "base": {**PLUGIN_RUN, "aug_backend": "tensor"},
           "grid": [{"entropy_weight": [0.0, 0.5]}], "seeds": [1], "resources": {"workers": 1, "cpus_per_worker": 1},
           "max_concurrent_trials": 1, "tracking": {"jsonl": {}}}
    path = tmp / "plugins.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main([str(path), "--storage", str(tmp / "store")]) == 0
    exp = tmp / "store" / "plugins"
    records = {p.parent.name.rsplit("-", 1)[0]: json.loads(p.read_text()) for p in exp.glob("train/*/metrics.json")}
    return {"exp": exp, "records": records}


def scalar_tags(logdir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.mark.ray
@pytest.mark.slow
def test_plugin_algorithm_its_option_views_and_metric_names(trained, swept):
    rec = trained["record"]
    assert rec["config"]["algorithm"] == "entmin" and rec["config"]["entropy_weight"] == 0.3
    assert rec["config"]["unlabeled_view"] == "strong" and "threshold" not in rec["config"]
    assert [h["step"] for h in rec["history"]] == [3, 6] and rec["summary"]["evals"] == 2
    assert all(set(METRICS) <= set(h) and "train_loss" not in h for h in rec["history"])
    assert rec["history"][0]["samples_per_step"] == 4 + 8  # its views: one labeled, one unlabeled
    line = re.search(r"epoch 1 step 3/6 \|[^\r\n]*", trained["stderr"]).group(0)  # the progress line
    assert line.startswith("epoch 1 step 3/6 | train_total ") and all(re.search(rf"\b{m} \d", line) for m in METRICS)
    assert set(METRICS) <= scalar_tags(trained["out"])  # TensorBoard
    # the sweep: the option as a grid axis, each trial its value
    assert set(swept["records"]) == {"bars_entropy_weight=0.0.s1", "bars_entropy_weight=0.5.s1"}
    for name, rec in swept["records"].items():
        assert rec["finished"] and rec["config"]["entropy_weight"] == float(name.split("=")[1][:3])
        assert set(METRICS) <= set(rec["history"][-1]) and set(METRICS) <= scalar_tags(
            next((swept["exp"] / "train").glob(f"{name}-*")) / "tensorboard")
    zero = swept["records"]["bars_entropy_weight=0.0.s1"]["history"]
    assert all(h["train_total"] == h["train_ce"] for h in zero)  # weight 0: the entropy term drops out
    from fixmatch_ray import results

    df = results.load(str(swept["exp"]))
    assert sorted(df.entropy_weight.unique()) == [0.0, 0.5] and set(df.unlabeled_view) == {"strong"}
    assert set(METRICS) <= set(df.columns) and len(df) == 4
    report = (swept["exp"] / "results.md").read_text()  # the report: a table and a curve per metric
    assert all(m in report for m in METRICS) and (swept["exp"] / "train_entropy_vs_step.png").is_file()


@pytest.mark.ray
@pytest.mark.slow
def test_plugin_dataset(trained, swept):
    rec = trained["record"]
    assert rec["config"]["dataset"] == "bars" and (rec["config"]["depth"], rec["config"]["width"]) == (10, 1)
    assert 0 <= rec["summary"]["last_acc"] <= 100
    assert all(r["config"]["dataset"] == "bars" and r["trial"]["setting"]["dataset"] == "bars"
               for r in swept["records"].values())


@pytest.mark.ray
@pytest.mark.slow
def test_plugin_policy_on_both_backends(trained, swept):
    """Per image on the PIL path (train: auto on a CPU picks pil, which it declares) and per batch on
    the device path (the sweep's aug_backend: tensor)."""
    assert (trained["record"]["config"]["policy"], trained["record"]["config"]["aug_backend"]) == ("invert", "pil")
    assert {(r["config"]["policy"], r["config"]["aug_backend"]) for r in swept["records"].values()} == {
        ("invert", "tensor")}


@pytest.mark.ray
@pytest.mark.slow
def test_plugin_tracker_in_single_runs_and_sweeps(trained, swept):
    def read(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    lines = read(trained["jsonl"])
    assert lines[0]["config"]["entropy_weight"] == 0.3
    assert [d["step"] for d in lines if "step" in d] == [3, 6]
    assert all(set(METRICS) <= set(d["metrics"]) for d in lines if "step" in d)
    assert lines[-1]["summary"] == pytest.approx(trained["record"]["summary"])
    for name, rec in swept["records"].items():  # one file per trial, in the experiment (local) directory
        lines = read(swept["exp"] / f"{name}.jsonl")
        assert lines[0]["config"]["setting"] == rec["trial"]["label"]
        assert [(d["step"], d["metrics"]["train_entropy"]) for d in lines if "step" in d] == [
            (h["step"], pytest.approx(h["train_entropy"])) for h in rec["history"]]
        assert lines[-1]["summary"] == pytest.approx(rec["summary"])
