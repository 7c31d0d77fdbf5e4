"""End-to-end runs of the single-run CLI on digits and on CIFAR-format files."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fixmatch_ray.training.checkpoint import load_checkpoint
from fixmatch_ray.train import main

# pinned to the CPU: on a GPU box `auto` would train on CUDA, where cuDNN is not bit-exact across a resume
TINY = ["--depth", "10", "--width", "1", "--num-workers", "0", "--no-progress", "--device", "cpu"]


def digits_args(out: Path, steps: int = 6, eval_step: int = 3, *extra: str) -> list[str]:
    return ["--dataset", "digits", "--num-labeled", "20", "--batch-size", "8", "--mu", "2",
            "--total-steps", str(steps), "--eval-step", str(eval_step), "--seed", "1",
            "--out", str(out), *TINY, *extra]


def test_digits_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(digits_args(out)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    doc = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in doc["history"]] == [3, 6]
    assert summary == doc["summary"] and summary["evals"] == 2
    assert 0 <= summary["median20_acc"] <= 100
    h = doc["history"][-1]
    for key in ("train_loss", "train_loss_x", "train_loss_u", "train_mask", "lr", "test_acc", "test_loss",
                "raw_test_acc", "median20_acc", "best_acc", "images_per_s"):
        assert key in h
    assert (out / "config.yaml").is_file() and (out / "checkpoint.pt").is_file()
    state, _ = load_checkpoint(out)
    assert state["step"] == 6 and len(state["history"]) == 2 and state["ema"] is not None
    assert state["config"]["seed"] == 1 and state["config"]["depth"] == 10


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(digits_args(out)) == 0
    acc = EventAccumulator(str(out))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    history = json.loads((out / "metrics.json").read_text())["history"]
    # one name per number: every number of the record under its record name, nothing else
    numbers = {k for k, v in history[0].items() if isinstance(v, float)} - {"wall_time"}
    per_class = {f"test_class_acc/{c}" for c in range(10)}  # every evaluation's, as one scalar per class
    assert tags == numbers | per_class and {
        "train_loss", "train_loss_x", "train_loss_u", "train_mask", "lr", "test_acc", "test_loss", "raw_test_acc",
        "median20_acc", "best_acc", "images_per_s", "test_balanced_acc", "test_macro_f1", "test_top5_acc"} == numbers
    assert [e.value for e in acc.Scalars("test_class_acc/3")][-1] == pytest.approx(history[-1]["test_class_acc"][3])
    for key in numbers:
        assert [(e.step, e.value) for e in acc.Scalars(key)] == [
            (h["step"], pytest.approx(h[key], rel=1e-6)) for h in history], key


def test_cifar_files_end_to_end(cifar10_root, tmp_path):
    out = tmp_path / "c10"
    args = ["--dataset", "cifar10", "--data-dir", str(cifar10_root), "--no-download", "--num-labeled", "40",
            "--batch-size", "4", "--mu", "1", "--total-steps", "2", "--eval-step", "1", "--seed", "0",
            "--out", str(out), *TINY]
    assert main(args) == 0
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2


def test_reference_readme_command_starts_wrn_28_2(cifar10_root, tmp_path, monkeypatch):
    """The port's README command, with CIFAR-10 files present: a real WRN-28-2 step, full batch."""
    from conftest import write_cifar

    root = write_cifar(tmp_path / "data", "cifar10", train_per_class=400, test_per_class=2)
    out = tmp_path / "results" / "cifar10@4000.5"
    cmd = ["--dataset", "cifar10", "--num-labeled", "4000", "--arch", "wideresnet", "--batch-size", "64",
           "--lr", "0.03", "--expand-labels", "--seed", "5", "--out", str(out)]
    # a couple of steps instead of 2^20, and the files written above instead of a download
    assert main(cmd + ["--total-steps", "1", "--eval-step", "1", "--data-dir", str(root),
                       "--num-workers", "2", "--no-progress"]) == 0
    state, _ = load_checkpoint(out)
    cfg = state["config"]
    assert (cfg["arch"], cfg["depth"], cfg["width"], cfg["expand_labels"]) == ("wideresnet", 28, 2, True)
    assert sum(v.numel() for k, v in state["model"].items() if "running" not in k and "num_batches" not in k) \
        == 1_467_610


def test_resume_refuses_to_overwrite_and_checks_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(digits_args(out, 3, 3)) == 0
    assert main(digits_args(out, 3, 3)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["--resume", str(out), "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.5 differs" in err and "Traceback" not in err


def test_bad_flags_are_one_line(tmp_path, capsys):
    assert main(["--dataset", "digits", "--num-labeled", "1500", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: num_labeled: digits spreads labels") and "got 1500" in err and "\n" not in err
    assert not (tmp_path / "x").exists()
    assert main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "none"), "--no-download",
                 "--out", str(tmp_path / "y")]) == 1
    assert "cifar-10-batches-py" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_compat_flags_are_accepted_with_a_note(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(digits_args(out, 2, 2, "--opt_level", "O2", "--local_rank", "0", "--amp")) == 0
    err = capsys.readouterr().err
    assert "apex" in err and "--ddp-workers" in err


def _run_cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fixmatch_ray.train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def algorithm_args(out: Path, steps: int, eval_step: int, algorithm: str) -> list[str]:
    """digits_args for ``algorithm`` at its own unlabeled ratio (and all labels where it takes them)."""
    args = digits_args(out, steps, eval_step, "--algorithm", algorithm)
    if algorithm != "fixmatch":
        args[args.index("--mu"):args.index("--mu") + 2] = []
    if algorithm == "fullysupervised":
        args[args.index("--num-labeled"):args.index("--num-labeled") + 2] = []
    return args


@pytest.mark.parametrize("algorithm", ["fixmatch", "pseudolabel", "meanteacher", "fullysupervised"])
def test_killed_run_resumes_exactly(tmp_path, algorithm):
    """SIGKILL a real training process after its first checkpoint; the resumed run must end with
    the same eval history and weights as an uninterrupted one (each algorithm's own state path:
    Mean Teacher's EMA teacher, the baselines' warm-up from the restored step)."""
    _kill_and_resume(tmp_path, lambda out: algorithm_args(out, 40, 10, algorithm))


def test_killed_remixmatch_run_resumes_exactly(tmp_path):
    """ReMixMatch keeps the most state of the MixUp family: the MixUp generator (MixMatch's too), the
    moving average of predictions, the labeled distribution, and an extra head in the model."""
    _kill_and_resume(tmp_path, lambda out: digits_args(out, 12, 4, "--algorithm", "remixmatch", "--mu", "1",
                                                       "--K", "2", "--warmup-kimg", "0.05"))


def _kill_and_resume(tmp_path, args) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(args(straight)) == 0
    proc = _run_cli(args(killed))
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state, _ = load_checkpoint(killed)
    total = load_checkpoint(straight)[0]["step"]
    assert 0 < state["step"] < total, "the process must die mid-run"
    assert main(["--resume", str(killed), "--no-progress"]) == 0
    a, b = load_checkpoint(straight)[0], load_checkpoint(killed)[0]
    strip = lambda hs: [{k: v for k, v in h.items() if k not in ("images_per_s", "wall_time")} for h in hs]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert repr(a["algorithm"]) == repr(b["algorithm"])


def test_non_finite_loss_names_the_step(tmp_path, capsys):
    assert main(digits_args(tmp_path / "nan", 6, 6, "--lr", "1e30")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: loss became NaN/inf at step ")
