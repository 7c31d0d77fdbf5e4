"""The sweep driver's status file names each trial's Train run exactly as the trial named it."""
from __future__ import annotations

from types import SimpleNamespace

from fixmatch_ray.results.read import read_status
from fixmatch_ray.storage.layout import run_name, trial_dirname


def test_the_status_file_keys_are_the_trials_run_names(tmp_path):
    from fixmatch_ray.launch.tuner import write_status

    ids = {"digits@20.s1": "e5a2b_00000", "digits@20_lambda_u=0.0.s2": "e5a2b_00001"}  # Tune's ids hold a '_'
    results = [SimpleNamespace(config={"trial": {"name": name}}, path=str(tmp_path / trial_dirname(name, i)),
                               error=None if n else RuntimeError("died")) for n, (name, i) in enumerate(ids.items())]
    write_status(str(tmp_path), results)
    assert read_status(str(tmp_path)) == {"digits@20.s1-e5a2b_00000": "failed",
                                          "digits@20_lambda_u=0.0.s2-e5a2b_00001": "ended"}
    assert set(read_status(str(tmp_path))) == {run_name(name, i) for name, i in ids.items()}
