"""The Table 2 layout on run records of several algorithms, with values worked out by hand."""
from __future__ import annotations

import csv
import io

import pytest

from fixmatch_ray.results.report import main
from test_report import ablation_trial  # tests/ is on the path (its conftest)


@pytest.fixture
def comparison(tmp_path):
    exp = tmp_path / "exp"
    # median20 = acc (constant evaluations); error = 100 - acc
    for setting, accs in (({"dataset": "cifar10", "algorithm": "mixmatch"}, (88.0, 90.0)),
                          ({"dataset": "cifar10", "policy": "ctaugment"}, (95.0, 94.0)),
                          ({"dataset": "cifar10", "policy": "randaugment"}, (96.0, 96.0)),
                          ({"dataset": "digits", "algorithm": "uda"}, (80.0, 70.0))):
        for seed, acc in enumerate(accs, 1):
            ablation_trial(exp, setting, seed, acc)
    return exp


def test_rows_are_methods_columns_cells_beside_the_paper(comparison, capsys):
    assert main([str(comparison)]) == 0
    md = (comparison / "table2.md").read_text()
    assert md in capsys.readouterr().out.replace("### Table 2 layout\n\n", "")
    lines = md.splitlines()
    assert lines[0] == "| method | cifar10@250 | digits@250 |"
    # the paper's row order: MixMatch, UDA, then FixMatch RA and CTA
    assert [line.split(" | ")[0] for line in lines[2:6]] == ["| MixMatch", "| UDA", "| FixMatch (RA)", "| FixMatch (CTA)"]
    # MixMatch: errors 12, 10 -> 11 ± 1.41; paper 11.05 ± 0.86 -> (11 - 11.05) / 0.86 = -0.06 σ
    assert "| 11.00 ± 1.41 (2) · paper 11.05 ± 0.86 · Δ -0.06σ | - |" in lines[2]
    # UDA on digits: no paper number, ours alone (errors 20, 30)
    assert lines[3] == "| UDA | - | 25.00 ± 7.07 (2) |"
    # FixMatch CTA: errors 5, 6 -> 5.5 ± 0.71, paper 5.07 ± 0.33 -> +1.30 σ; RA: 4 ± 0, paper 5.07 ± 0.65
    assert "5.50 ± 0.71 (2) · paper 5.07 ± 0.33 · Δ +1.30σ" in lines[5]
    assert "4.00 ± 0.00 (2) · paper 5.07 ± 0.65 · Δ -1.65σ" in lines[4]


def test_csv_latex_and_figure(comparison):
    assert main([str(comparison)]) == 0
    rows = list(csv.DictReader(io.StringIO((comparison / "table2.csv").read_text())))
    assert [(r["method"], r["cell"]) for r in rows] == [("MixMatch", "cifar10@250"), ("UDA", "digits@250"),
                                                        ("FixMatch (RA)", "cifar10@250"), ("FixMatch (CTA)", "cifar10@250")]
    mix = rows[0]
    assert (float(mix["error_mean"]), float(mix["paper_error_mean"]), mix["n"]) == (11.0, 11.05, "2")
    assert float(mix["delta_paper_std"]) == pytest.approx((11.0 - 11.05) / 0.86)
    assert rows[1]["paper_error_mean"] == "" and rows[1]["delta_paper_std"] == ""
    tex = (comparison / "table2.tex").read_text()
    assert tex.startswith(r"\begin{tabular}{lrr}") and tex.rstrip().endswith(r"\end{tabular}")
    assert r"MixMatch & 11.00 $\pm$ 1.41 (2) & - \\" in tex
    assert r"\quad paper & 11.05 $\pm$ 0.86 [-0.06$\sigma$] & - \\" in tex
    assert "UDA & - & 25.00 $\\pm$ 7.07 (2) \\\\\n" in tex and tex.count(r"\quad paper") == 3
    assert (comparison / "table2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_table2_for_a_single_method(tmp_path):
    exp = tmp_path / "one"
    for seed in (1, 2):
        ablation_trial(exp, {"dataset": "cifar10", "threshold": 0.9}, seed, 90.0)
    assert main([str(exp), "--no-plots"]) == 0
    assert not (exp / "table2.md").exists()
