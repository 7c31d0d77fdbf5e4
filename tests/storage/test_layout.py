"""The experiment layout has one truth: every file name an experiment or a run holds is spelled
in fixmatch_ray/storage/layout.py only, and the run-name helpers invert each other."""
from __future__ import annotations

import ast
from pathlib import Path

from fixmatch_ray.storage import layout

PACKAGE = Path(layout.__file__).resolve().parents[1]


def _names() -> set[str]:
    """Every file or folder name the layout defines (its string constants, the results' files)."""
    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and not v.endswith("*")}
    names |= {layout.results_file(ext) for ext in ("md", "csv", "json", "tex")}
    return names - {layout.RESULTS, layout.TRAIN_DIR, layout.TB_DIR}  # also ordinary words: a split, a tracker


def test_no_module_but_the_layout_spells_an_experiment_file_name():
    names = _names()
    assert {"metrics.json", "sweep.yaml", "lease.json", "trials.json", "checkpoint.pt", "hparams", "results.md",
            "config.yaml"} <= names
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(layout.__file__).resolve():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert not found, "file names belong in storage/layout.py: " + ", ".join(found)


def test_run_names_and_tune_directories_round_trip():
    """Tune's trial ids hold an underscore (``e5a2b_00003``): the id read back from a trial's Tune
    directory names the same Train run the trial wrote (the status file's key)."""
    name, trial_id = "digits@20.s1_x", "e5a2b_00003"  # a label's spaces become underscores too
    assert layout.run_dir("s3://b/exp?region=eu", name, trial_id) == "s3://b/exp/train/digits@20.s1_x-e5a2b_00003?region=eu"
    tune_dir = f"/r/exp/{layout.trial_dirname(name, trial_id)}/"
    assert tune_dir == "/r/exp/digits@20.s1_x_e5a2b_00003/"
    assert layout.trial_id_of(tune_dir, name) == trial_id
    assert layout.run_name(name, layout.trial_id_of(tune_dir, name)) == "digits@20.s1_x-e5a2b_00003"
