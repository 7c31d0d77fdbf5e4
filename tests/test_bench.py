"""The benchmark CLI runs end to end and writes its figures (no timing is asserted here)."""
import json

import torch

from fixmatch_ray import bench


def test_bench_aug_prints_and_writes_both_paths(tmp_path, capsys, monkeypatch):
    threads = torch.get_num_threads()
    real = bench.bench_aug
    monkeypatch.setattr(bench, "bench_aug", lambda repeats: real(steps=1, repeats=1))
    out = tmp_path / "aug.json"
    assert bench.main(["aug", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["aug"]
    assert res["images_per_step"] == 960 and res["torch_threads"] == 1
    assert res["pil_cpu_s_per_step"] > 0 and res["batched_cpu_s_per_step"] > 0
    assert res["ratio"] > 0
    # the printed figure is the one written to the JSON file
    assert f"ratio:           {res['ratio']:.1f}x less CPU time" in capsys.readouterr().out
    assert torch.get_num_threads() == threads  # measured on one thread, the caller's count restored
