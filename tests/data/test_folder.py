"""dataset: folder on real image files (scikit-learn's digits written as PNG/JPEG): the layouts,
the decoded cache, bad input, and a run end to end through train -> predict -> export."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from folderdata import CLASSES, digits_parts, write_digits_csv, write_digits_folder
from fixmatch_ray.data.datasets import run_spec
from fixmatch_ray.data.datasets.imagecache import CACHE_DIR
from fixmatch_ray.errors import DataError
from fixmatch_ray.train import main as train

TINY = ["--depth", "10", "--width", "1", "--num-workers", "0", "--no-progress", "--device", "cpu",
        "--batch-size", "8", "--mu", "2", "--total-steps", "4", "--eval-step", "2", "--seed", "1"]


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    return write_digits_folder(tmp_path_factory.mktemp("digits") / "data")


def test_spec_from_the_files(digits_dir):
    spec = run_spec("folder", digits_dir)
    assert spec.classes == CLASSES and spec.num_classes == 10 and spec.image_size == 16
    assert spec.num_train == 120 and spec.facts["counts"] == {"train": 120, "unlabeled": 40, "test": 40, "val": 30}
    parts = digits_parts()
    fit = np.stack([img for img, _ in parts["train"] + parts["unlabeled"]]).astype(np.float64) / 255
    assert spec.mean == pytest.approx(tuple(fit.mean(axis=(0, 1, 2))), abs=1e-6)  # train + unlabeled only
    assert spec.std == pytest.approx(tuple(fit.std(axis=(0, 1, 2))), abs=1e-6)
    train = spec.load(str(digits_dir), "train", False)
    # class folders in sorted order, files sorted: the PNGs hold exactly the pixels written
    assert np.array_equal(train.images, np.stack([img for img, _ in parts["train"]]))
    assert train.targets.tolist() == [c for _, c in parts["train"]]
    unl = spec.load(str(digits_dir), "train+unlabeled", False)
    assert len(unl) == 160 and (unl.targets[120:] == -1).all() and np.array_equal(unl.images[:120], train.images)


def test_cache_is_reused_and_keyed_by_the_files(tmp_path):
    root = write_digits_folder(tmp_path / "d", val=False, train=3, unlabeled=0, test=1)
    first = run_spec("folder", root).facts["cache"]
    stamp = os.stat(Path(first) / "images.npy").st_mtime_ns
    assert run_spec("folder", root).facts["cache"] == first  # the same entry, not decoded again
    assert os.stat(Path(first) / "images.npy").st_mtime_ns == stamp
    img = root / "train" / "digit3" / "0009.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)  # one file changed: a new entry
    second = run_spec("folder", root).facts["cache"]
    assert second != first and run_spec("folder", root).load(str(root), "train", False).images[9].max() == 0
    assert run_spec("folder", root, image_size=8).image_size == 8
    assert sorted(p.name for p in (root / CACHE_DIR).iterdir() if not p.name.startswith(".")) == sorted(
        {Path(first).name, Path(second).name, Path(run_spec("folder", root, 8).facts["cache"]).name})


def _bad(tmp_path, capsys, root: Path, *extra: str) -> str:
    out = tmp_path / "run"
    assert train(["--dataset", "folder", "--data-dir", str(root), "--num-labeled", "20", *TINY, "--out", str(out),
                  *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not out.exists() and not (root / CACHE_DIR).exists()  # nothing written
    return err


def _small(tmp_path) -> Path:
    return write_digits_folder(tmp_path / "d", val=False, train=3, unlabeled=1, test=1)


def test_empty_class_folder(tmp_path, capsys):
    root = _small(tmp_path)
    (root / "train" / "extra").mkdir()
    assert "train/extra: empty class folder" in _bad(tmp_path, capsys, root)


def test_test_class_absent_from_train(tmp_path, capsys):
    root = _small(tmp_path)
    os.rename(root / "train" / "digit9", tmp_path / "gone")
    err = _bad(tmp_path, capsys, root)
    assert "test/digit9: class 'digit9' is not in train/" in err


def test_truncated_image_is_refused_with_its_path(tmp_path, capsys):
    root = _small(tmp_path)
    bad = root / "train" / "digit2" / "0007.png"
    bad.write_bytes(bad.read_bytes()[:60])
    err = _bad(tmp_path, capsys, root)
    assert f"{bad}: truncated or corrupt image" in err


def test_non_image_file(tmp_path, capsys):
    root = _small(tmp_path)
    (root / "unlabeled" / "notes.txt").write_text("not an image")
    assert f"{root / 'unlabeled' / 'notes.txt'}: not an image Pillow can read" in _bad(tmp_path, capsys, root)


def test_mixed_sizes_without_image_size(tmp_path, capsys):
    root = _small(tmp_path)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "test" / "digit0" / "big.png")
    err = _bad(tmp_path, capsys, root)
    assert "images of different sizes" in err and "big.png: 20x20" in err and "set image_size" in err


def test_num_labeled_larger_than_the_pool(tmp_path, capsys):
    err = _bad(tmp_path, capsys, _small(tmp_path), "--num-labeled", "31")
    assert "num_labeled" in err and "31" in err and "30 training images" in err


def test_val_size_leaving_a_class_without_labeled_images(tmp_path, capsys):
    root = _small(tmp_path)
    for f in sorted((root / "train" / "digit4").iterdir())[1:]:
        f.unlink()  # digit4 keeps one training image: the split rule gives it to validation first
    err = _bad(tmp_path, capsys, root, "--val-size", "10")
    assert "val_size: 10 takes every training image of class 'digit4'" in err


def _records(out: Path) -> tuple[dict, dict]:
    doc = json.loads((out / "metrics.json").read_text())
    return doc, doc["history"][-1]


def _predicted_accuracy(out: Path, images: list[str], truth: list[str], tmp_path: Path) -> float:
    from fixmatch_ray.predict import main as predict

    csv_out = tmp_path / "predictions.csv"
    assert predict([str(out), *images, "--out", str(csv_out), "--batch-size", "7", "--device", "cpu"]) == 0
    rows = list(csv.DictReader(csv_out.open()))
    assert len(rows) == len(truth) and all(r["top_k"].split(";")[0].startswith(r["predicted"] + ":") for r in rows)
    return 100.0 * sum(r["predicted"] == t for r, t in zip(rows, truth)) / len(truth)


def _torchscript_equals_ema(out: Path, x: torch.Tensor) -> None:
    from fixmatch_ray.export import main as export
    from fixmatch_ray.inference import load_trained

    assert export([str(out), "--format", "torchscript", "--out", str(out / "exported")]) == 0
    with pytest.warns(FutureWarning):  # torch's notice that it prefers torch.export; TorchScript still loads
        scripted = torch.jit.load(str(out / "exported" / "model.torchscript.pt"))  # plain torch
    meta = json.loads((out / "exported" / "model.json").read_text())
    model = load_trained(out)
    assert meta["classes"] == list(CLASSES) and meta["mean"] == list(model.mean)
    with torch.no_grad():
        assert torch.equal(scripted(x), model.net(x))


def test_folder_run_end_to_end(digits_dir, tmp_path):
    """PNG class folders with unlabeled/ and val/: train, then predict the test folder (the same
    accuracy as the run's last evaluation, exactly) and export TorchScript (the EMA's outputs)."""
    out = tmp_path / "run"
    assert train(["--dataset", "folder", "--data-dir", str(digits_dir), "--num-labeled", "all", *TINY,
                  "--out", str(out)]) == 0
    doc, last = _records(out)
    assert doc["dataset"]["classes"] == list(CLASSES) and doc["dataset"]["counts"]["val"] == 30
    for key in ("val_acc", "test_balanced_acc", "test_macro_f1", "test_top5_acc", "test_class_acc"):
        assert key in last
    assert np.array(last["test_confusion"]).sum() == 40 and np.array(last["val_confusion"]).sum() == 30
    assert "test_confusion" not in doc["history"][0]  # the last evaluation's only
    vals = [h["val_acc"] for h in doc["history"]]
    assert doc["summary"]["test_at_best_val_acc"] == doc["history"][vals.index(max(vals))]["test_acc"]
    files = sorted(str(p) for p in (digits_dir / "test").rglob("*.png"))
    truth = [Path(f).parent.name for f in files]
    assert _predicted_accuracy(out, [str(digits_dir / "test")], truth, tmp_path) == last["test_acc"]
    _torchscript_equals_ema(out, torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(3)))


def test_csv_layout_with_jpeg_of_another_size(tmp_path):
    """CSV rows (empty label: unlabeled), 24 px JPEGs resized to 16 by image_size, val_size from
    val.csv's absence: the same guarantees."""
    root = write_digits_csv(tmp_path / "d", fmt="jpg", size=24)
    (root / "val.csv").unlink()
    out = tmp_path / "run"
    assert train(["--dataset", "folder", "--data-dir", str(root), "--image-size", "16", "--num-labeled", "40",
                  "--val-size", "20", *TINY, "--out", str(out)]) == 0
    doc, last = _records(out)
    assert doc["dataset"]["image_size"] == 16 and doc["config"]["val_size"] == 20
    assert np.array(last["val_confusion"]).sum() == 20
    rows = list(csv.DictReader((root / "test.csv").open()))
    files, truth = [str(root / r["path"]) for r in rows], [r["label"] for r in rows]
    assert _predicted_accuracy(out, files, truth, tmp_path) == last["test_acc"]
    _torchscript_equals_ema(out, torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(4)))


def test_a_decode_error_leaves_no_cache(tmp_path):
    root = _small(tmp_path)
    (root / "test" / "digit1" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    with pytest.raises(DataError):
        run_spec("folder", root)
    assert not (root / CACHE_DIR).exists()


def test_a_dry_run_lists_a_folder_dataset_without_decoding(tmp_path):
    from fixmatch_ray.data.datasets import check_dataset

    root = _small(tmp_path)
    check_dataset("folder", root, False, decode=False)  # the sweep's --dry-run: writes nothing
    assert not (root / CACHE_DIR).exists()
    check_dataset("folder", root, False, image_size=8)  # the sweep driver: decoded at the trials' size
    assert Path(run_spec("folder", root, 8).facts["cache"]).is_dir() and len(list((root / CACHE_DIR).iterdir())) == 1
    (root / "train" / "digit0" / "x.txt").write_text("?")
    with pytest.raises(DataError, match="x.txt: not an image"):
        check_dataset("folder", root, False)


@pytest.mark.ray
def test_two_seed_sweep_reports_the_validation_choice_and_confusion(ray_session, digits_dir, tmp_path):
    """A 2-seed sweep on the folder dataset through Ray: both trials read the one cache entry, the
    report has the validation-selected figure and a confusion matrix with the class names."""
    import yaml

    from fixmatch_ray import results
    from fixmatch_ray.results.report import main as report
    from fixmatch_ray.sweep import main as sweep

    doc = {"name": "mine", "base": {"dataset": "folder", "data_dir": str(digits_dir), "depth": 10, "width": 1,
                                    "batch_size": 8, "mu": 2, "total_steps": 4, "eval_step": 2, "num_workers": 0},
           "grid": [{"num_labeled": [20]}], "seeds": [1, 2], "resources": {"workers": 1, "cpus_per_worker": 1},
           "max_concurrent_trials": 1}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(doc))
    assert sweep([str(tmp_path / "mine.yaml"), "--storage", str(tmp_path / "store")]) == 0
    exp = tmp_path / "store" / "mine"
    assert report([str(exp)]) == 0
    md = (exp / "results.md").read_text()
    assert "test acc % at best validation eval" in md and (exp / "confusion_folder@20.png").is_file()
    df = results.load(str(exp))
    assert sorted(df.seed.unique()) == [1, 2] and df.val_acc.notna().all() and df.test_macro_f1.notna().all()
    caches = {json.loads(p.read_text())["dataset"]["cache"] for p in (exp / "train").glob("*/metrics.json")}
    assert len(caches) == 1
