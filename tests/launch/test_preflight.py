"""The sweep's checks and the dry run are the same functions: each check refuses the same input with
the same line in both modes, and the dry run writes, downloads and takes nothing."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fixmatch_ray.config import parse_sweep
from fixmatch_ray.errors import ConfigError
from fixmatch_ray.launch import preflight
from fixmatch_ray.storage import Store


def spec_of(tmp_path: Path, storage: str, dataset: str = "digits", **over):
    doc = {"name": "exp", "storage": storage, "grid": [{"dataset": dataset, "num_labeled": 40}],
           "base": {"total_steps": 4, "eval_step": 2}, **over}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return preflight.resolve_paths(parse_sweep(doc)), str(path)


def both_refuse(check, *args) -> str:
    """The one line ``check`` raises, the same with and without ``dry_run``."""
    lines = []
    for dry in (True, False):
        with pytest.raises(ConfigError) as e:
            check(*args, dry_run=dry)
        lines.append(str(e.value))
    assert lines[0] == lines[1] and "\n" not in lines[0]
    return lines[0]


def test_storage_is_refused_alike_and_only_the_sweep_creates_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert both_refuse(preflight.check_storage, str(blocker / "sub")).startswith(f"storage: cannot write to '{blocker}/sub'")
    preflight.check_storage(str(tmp_path / "new" / "store"), dry_run=True)
    assert not (tmp_path / "new").exists()
    preflight.check_storage(str(tmp_path / "new" / "store"))
    assert (tmp_path / "new" / "store").is_dir() and not list((tmp_path / "new" / "store").iterdir())


def test_a_missing_dataset_is_refused_alike_and_the_dry_run_downloads_nothing(tmp_path):
    spec, _ = spec_of(tmp_path, str(tmp_path / "store"), "cifar10",
                      base={"data_dir": str(tmp_path / "d"), "download": False, "total_steps": 4})
    assert "cifar10" in both_refuse(preflight.check_data, spec)
    allowed, _ = spec_of(tmp_path, str(tmp_path / "store"), "cifar10",
                         base={"data_dir": str(tmp_path / "d"), "download": True, "total_steps": 4})
    assert preflight.check_data(allowed, dry_run=True) == [f"cifar10 is not in {tmp_path / 'd'}: the sweep downloads it first"]
    assert not (tmp_path / "d").exists()


def test_a_resume_from_another_file_is_refused_alike(tmp_path, monkeypatch):
    """An earlier experiment started from another file: the dry run's note and the sweep's
    preparation refuse it with one line; the same file resumes in both."""
    from fixmatch_ray.launch import tuner

    monkeypatch.setattr(tuner, "experiment_exists", lambda experiment: True)  # Tune's state: not what is checked
    spec, sweep_file = spec_of(tmp_path, str(tmp_path / "store"))
    exp = Path(spec.experiment_path())
    exp.mkdir(parents=True)
    (exp / "sweep.yaml").write_text("name: other\n")
    lines = []
    for check in (preflight.experiment_note, preflight.prepare_experiment):
        with pytest.raises(ConfigError) as e:
            check(spec, sweep_file, False)
        lines.append(str(e.value))
    assert lines[0] == lines[1] and "differs from the one" in lines[0]
    (exp / "sweep.yaml").write_text(Path(sweep_file).read_text())
    assert preflight.experiment_note(spec, sweep_file, False).startswith("resumes ")
    assert preflight.prepare_experiment(spec, sweep_file, False) is True


def test_fresh_on_remote_storage_is_refused_alike(tmp_path, s3_env):
    spec, sweep_file = spec_of(tmp_path, s3_env.uri())
    Store(spec.experiment_path()).write_text("sweep.yaml", "name: exp\n")
    lines = []
    for check in (preflight.experiment_note, preflight.prepare_experiment):
        with pytest.raises(ConfigError) as e:
            check(spec, sweep_file, True)
        lines.append(str(e.value))
    assert lines[0] == lines[1] and lines[0].startswith("--fresh: move ")


def test_a_new_experiment_is_written_by_the_sweep_only(tmp_path):
    spec, sweep_file = spec_of(tmp_path, str(tmp_path / "store"))
    assert preflight.experiment_note(spec, sweep_file, False) == f"new experiment {spec.experiment_path()}"
    assert preflight.peek_lease(spec.experiment_path()) == ""
    assert not (tmp_path / "store").exists()
    assert preflight.prepare_experiment(spec, sweep_file, False) is False
    assert (Path(spec.experiment_path()) / "sweep.yaml").read_text() == Path(sweep_file).read_text()


def test_capacity_without_a_cluster_is_the_files_request(tmp_path):
    spec, _ = spec_of(tmp_path, str(tmp_path / "store"))
    assert preflight.check_capacity(spec, None, autoscaling=False) == 1
    four, _ = spec_of(tmp_path, str(tmp_path / "store"), max_concurrent_trials=4)
    assert preflight.check_capacity(four, None, autoscaling=False) == 4
    assert preflight.check_capacity(spec, {"CPU": 3.0}, autoscaling=False) == 2  # 1 CPU + 0.01 for its driver
