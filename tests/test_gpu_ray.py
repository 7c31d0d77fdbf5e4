"""``pytest -m gpu`` through Ray: Train runs and Tune trials on real GPUs (skipped without CUDA).

Probing trials (:func:`gpucheck.probed_run`) run the real worker entry point and record what the
trial process saw."""
from __future__ import annotations

import pytest
import torch

from fixmatch_ray.config import Resources, RunConfig
from gpucheck import probed_run

if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the GPU suite runs on a machine with one", allow_module_level=True)

pytestmark = [pytest.mark.gpu, pytest.mark.ray]
CFG = RunConfig(dataset="digits", num_labeled=20, batch_size=8, mu=2, total_steps=20, eval_step=10,
                depth=10, width=1, num_workers=0, seed=1)


def test_one_gpu_run_ray(ray_session, tmp_path):
    from fixmatch_ray.launch.train_job import run_ray
    from fixmatch_ray.training.record import read_record

    out = tmp_path / "run"
    summary = run_ray(CFG.replace(out=str(out)), Resources(workers=1, cpus_per_worker=1, gpus_per_worker=1),
                      max_failures=0)
    record = read_record(str(out))
    assert summary["evals"] == 2 and [h["step"] for h in record["history"]] == [10, 20]
    assert record["config"]["aug_backend"] == "tensor"  # auto resolved on a CUDA device


def test_cpu_only_trial_on_a_gpu_node_leaves_cuda_uninitialised(ray_session, tmp_path):
    (rank0,) = probed_run(CFG, Resources(workers=1, cpus_per_worker=1), tmp_path, "cpu")
    assert rank0["device"] == "cpu" and rank0["cuda_initialized"] is False


def test_a_gpu_trial_trains_on_its_gpu(ray_session, tmp_path):
    (rank0,) = probed_run(CFG, Resources(workers=1, cpus_per_worker=1, gpus_per_worker=1), tmp_path, "gpu")
    assert rank0["device"].startswith("cuda") and rank0["cuda_initialized"] is True


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_ddp_on_two_gpus_uses_nccl_and_a_distinct_device_per_rank(ray_session, tmp_path):
    ranks = probed_run(CFG, Resources(workers=2, cpus_per_worker=1, gpus_per_worker=1), tmp_path, "ddp")
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["backend"] == "nccl" for r in ranks)
    assert ranks[0]["uuid"] != ranks[1]["uuid"]  # two physical GPUs (CUDA_VISIBLE_DEVICES differs per rank)
    from fixmatch_ray.training.record import read_record

    assert read_record(str(tmp_path / "ddp"))["history"][-1]["world_size"] == 2


SHARED = """\
name: shared
storage: results
base:
  dataset: digits
  depth: 10
  width: 1
  batch_size: 8
  mu: 2
  total_steps: 400
  eval_step: 100
  num_workers: 0
grid:
  - num_labeled: [20]
seeds: [1, 2]
resources:
  workers: 1
  cpus_per_worker: 1
  gpus_per_worker: 0.5
max_concurrent_trials: 2
"""


def test_two_trials_at_half_a_gpu_run_at_once(ray_session, tmp_path):
    """Two trials asking for 0.5 GPU each run at the same time (their evaluation times overlap);
    with one GPU in the cluster they share it."""
    from fixmatch_ray.results.read import read_trials
    from fixmatch_ray.sweep import main

    path = tmp_path / "shared.yaml"
    path.write_text(SHARED)
    assert main([str(path), "--storage", str(tmp_path / "store"), "--no-report"]) == 0
    trials = read_trials(str(tmp_path / "store" / "shared"))
    assert len(trials) == 2 and all(t.status == "finished" for t in trials)
    assert all(t.run["aug_backend"] == "tensor" for t in trials)
    (a0, a1), (b0, b1) = ((t.history[0]["wall_time"], t.history[-1]["wall_time"]) for t in trials)
    assert a0 < b1 and b0 < a1, "the two trials did not overlap in time"
    print(f"\n[gpu] two 0.5-GPU trials on {ray_session.cluster_resources().get('GPU')} GPU(s): overlapped "
          f"{min(a1, b1) - max(a0, b0):.1f} s")
