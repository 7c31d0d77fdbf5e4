"""aug_backend: tensor — batches augmented on the device, keyed by (seed, step) like the PIL path."""
import json

import pytest
import torch

from fixmatch_ray.config import RunConfig
from fixmatch_ray.data.sampling import LABELED
from fixmatch_ray.training.loop import load_run_data, step_batches
from fixmatch_ray.train import main

CFG = RunConfig(dataset="digits", num_labeled=20, batch_size=8, mu=2, total_steps=10, eval_step=5, seed=3,
                aug_backend="tensor", depth=10, width=1)


@pytest.mark.parametrize("knobs", [{}, {"strong_aug": "no_cutout"}, {"strong_aug": "cutout_only"},
                                   {"anchoring": "strong.weak"}, {"anchoring": "strong.strong"},
                                   {"policy": "ctaugment"}, {"policy": "ctaugment", "strong_aug": "cutout_only"}])
def test_ranks_share_out_the_one_worker_batch(knobs):
    """Each rank augments its slice from the whole batch's draws: the slices join to the one-worker
    batch, with every ablation (a left-out part draws nothing on either) and every anchoring; a
    learning policy's probe images are sliced alike and its probe draws are the whole batch's on
    every rank, so all ranks learn alike."""
    cfg = CFG.replace(**knobs)
    data = load_run_data(cfg)
    cpu = torch.device("cpu")
    one = step_batches(cfg, data, 2, device=cpu)
    halves = [step_batches(cfg, data, 2, r, 2, cpu) for r in range(2)]
    for _ in range(3):
        full, a, b = next(one), next(halves[0]), next(halves[1])
        probes = ("x_probe",) if cfg.policy == "ctaugment" else ()  # a policy that learns is probed
        for key in ("y_lb", "idx_ulb", *probes):
            assert torch.equal(torch.cat([a[key], b[key]]), full[key]), key
        for key in ("x_lb", "x_ulb"):  # one batch per view
            assert len(full[key]) == len(a[key]) == len(b[key]) == (1 if key == "x_lb" else 2)
            for va, vb, vfull in zip(a[key], b[key], full[key]):
                assert torch.equal(torch.cat([va, vb]), vfull), key
        for part in range(2 if probes else 0):
            assert torch.equal(a["probe"][part], full["probe"][part]) and torch.equal(b["probe"][part], full["probe"][part])
        assert full["x_lb"][0].shape == (8, 3, 16, 16) and full["x_ulb"][1].shape == (16, 3, 16, 16)
        assert full["x_lb"][0].dtype == torch.float32



def test_a_step_draws_labeled_then_unlabeled_views_from_the_step_seed():
    """The device path's draw order, restated from its primitives: the generator seeded from
    (seed, step), the labeled weak crop first, then each unlabeled view in the order the algorithm
    names them (FixMatch: weak, then strong = its own crop and RandAugment). A step drawn in
    another order has other images."""
    from fixmatch_ray.data.batched import CropStore, step_seed
    from fixmatch_ray.data.normalize import normalize
    from fixmatch_ray.data.policies.randaugment_policy import rand_augment_batch

    data = load_run_data(CFG)
    it = step_batches(CFG, data, 3, device=torch.device("cpu"))
    lb, ulb = it.indices(3)
    got = next(it)
    images = torch.from_numpy(data.train.images).permute(0, 3, 1, 2).contiguous()
    store, (mean, std) = CropStore(images, data.spec.flip), (data.spec.mean, data.spec.std)
    g = torch.Generator().manual_seed(step_seed(CFG.seed, 3))
    x_lb = normalize(store.crop(lb, g), mean, std)
    x_ulb_w = normalize(store.crop(ulb, g), mean, std)
    x_ulb_s = normalize(rand_augment_batch(store.crop(ulb, g), g), mean, std)
    assert torch.equal(got["x_lb"][0], x_lb)
    assert torch.equal(got["x_ulb"][0], x_ulb_w) and torch.equal(got["x_ulb"][1], x_ulb_s)

def test_a_step_is_the_same_whatever_the_start():
    data = load_run_data(CFG)
    cpu = torch.device("cpu")
    it = step_batches(CFG, data, 0, device=cpu)
    for _ in range(4):
        next(it)
    fifth, again = next(it), next(step_batches(CFG, data, 4, device=cpu))
    for k in fifth:
        pairs = zip(fifth[k], again[k]) if isinstance(fifth[k], list) else [(fifth[k], again[k])]
        assert all(torch.equal(x, y) for x, y in pairs), k
    assert not torch.equal(fifth["x_ulb"][1], fifth["x_ulb"][0])  # strong differs from weak


def test_train_cli_with_tensor_backend(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dataset", "digits", "--num-labeled", "20", "--batch-size", "8", "--mu", "2", "--total-steps", "10",
            "--eval-step", "5", "--depth", "10", "--width", "1", "--seed", "3", "--aug-backend", "tensor",
            "--no-progress", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in doc["history"]] == [5, 10] and doc["config"]["aug_backend"] == "tensor"


def test_weak_views_are_crops_of_the_sampled_images():
    """The resident crop store is indexed by dataset position: each x_lb is a weak view of the
    labeled image the sampler picked for it (and carries that image's label)."""
    import numpy as np

    from test_batch_augment import reflect_crops

    data = load_run_data(CFG)
    it = step_batches(CFG, data, 0, device=torch.device("cpu"))
    keys = it.sampler.keys(0)
    lb = [k[3] for k in keys if k[0] == LABELED]
    batch = next(it)
    mean, std = torch.tensor(data.spec.mean).view(1, 3, 1, 1), torch.tensor(data.spec.std).view(1, 3, 1, 1)
    pixels = torch.round((batch["x_lb"][0] * std + mean) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i, k in enumerate(lb):
        assert any(np.array_equal(v, pixels[i]) for v in reflect_crops(data.train.images[k], 2)), i
        assert int(batch["y_lb"][i]) == int(data.train.targets[k])


def test_stream_tables_hold_the_sampler_draws_across_epochs_and_blocks():
    """The device-resident index tables give every step exactly the sampler's draws (the PIL
    path's keys), across epoch and block boundaries and from any start."""
    import numpy as np

    from fixmatch_ray.data.sampling import UNLABELED, StepBatchSampler, StreamTable

    labeled = np.array([3, 7, 9, 11, 20])
    sampler = StepBatchSampler(labeled, 23, 4, 8, seed=2, start_step=0, total_steps=100)
    cpu = torch.device("cpu")
    lb_table = StreamTable(2, LABELED, labeled, cpu, block_items=12)  # 2 epochs of 5 per block
    ulb_table = StreamTable(2, UNLABELED, np.arange(23), cpu, block_items=50)
    for step in [*range(40), 97, 3]:
        lb, ulb = sampler.indices(step)
        assert lb_table.take(step * 4, 4).tolist() == lb.tolist()
        assert ulb_table.take(step * 8, 8).tolist() == ulb.tolist()
        assert [k[3] for k in sampler.keys(step)] == [*lb.tolist(), *ulb.tolist()]


def test_eval_images_normalise_like_the_host_and_split_over_ranks():
    """The test set is held as uint8 and normalised per batch with the host's float32 ops: bit for
    bit the old float32 copy. Two ranks' shares cover it exactly once: their summed loss and hits
    are the one-process evaluation's."""
    from fixmatch_ray.data.batched import EvalImages, normalized_tensor
    from fixmatch_ray.training.engine import Engine

    data = load_run_data(CFG)
    test = EvalImages(data.test, data.spec, torch.device("cpu"))
    assert test.x.dtype == torch.uint8
    xs, ys = zip(*test.batches(100))
    assert torch.equal(torch.cat(xs), normalized_tensor(data.test, data.spec)) and len(torch.cat(ys)) == len(test)

    class Capture:
        def __init__(self, rank, world):
            self.rank, self.world_size, self.sums = rank, world, None

        def all_reduce(self, t, op="sum"):
            self.sums = t.clone()
            return t

    one = Engine(CFG, torch.device("cpu"), num_unlabeled=100).evaluate(test)
    shares = []
    for rank in range(2):
        trainer = Engine(CFG, torch.device("cpu"), num_unlabeled=100, collective=Capture(rank, 2))
        trainer.evaluate(test)
        shares.append(trainer.collective.sums)
    total = (shares[0] + shares[1]).tolist()  # loss sum, top-5 hits, the confusion matrix by rows
    loss, c = total[0], one["confusion"]
    assert [int(v) for v in total[2:]] == [v for row in c for v in row] and sum(map(sum, c)) == len(test)
    hits = sum(c[j][j] for j in range(len(c)))
    assert 100.0 * hits / len(test) == one["acc"]
    assert abs(loss / len(test) - one["loss"]) < 1e-5


@pytest.mark.parametrize("algorithm,knobs,kinds", [("mixmatch", {"mu": 1}, ("weak", "weak")),
                                                   ("remixmatch", {"mu": 1, "K": 2}, ("weak", "strong", "strong"))])
def test_k_views_alike_on_the_pil_and_the_device_path(algorithm, knobs, kinds):
    """An algorithm's K views come out of both data paths the same way: the same sampled images and
    labels, the views its Views name in that order, every weak view a weak crop of its image on
    either path (and the strong views are not)."""
    import numpy as np

    from test_batch_augment import reflect_crops

    batches = {}
    for backend in ("pil", "tensor"):
        cfg = RunConfig.from_dict(dict(dataset="digits", num_labeled=20, batch_size=4, total_steps=4, eval_step=4,
                                       seed=3, algorithm=algorithm, aug_backend=backend, num_workers=0, **knobs))
        assert cfg.views.unlabeled == kinds
        data = load_run_data(cfg)
        batches[backend] = next(step_batches(cfg, data, 0, device=torch.device("cpu")))
    pil, dev = batches["pil"], batches["tensor"]
    assert torch.equal(pil["idx_ulb"], dev["idx_ulb"]) and torch.equal(pil["y_lb"], dev["y_lb"])
    assert len(pil["x_ulb"]) == len(dev["x_ulb"]) == len(kinds)
    mean, std = torch.tensor(data.spec.mean).view(1, 3, 1, 1), torch.tensor(data.spec.std).view(1, 3, 1, 1)
    for batch in (pil, dev):
        for kind, view in zip(kinds, batch["x_ulb"]):
            assert view.shape == pil["x_ulb"][0].shape
            pixels = torch.round((view * std + mean) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            crops = [any(np.array_equal(v, pixels[i]) for v in reflect_crops(data.train.images[k], 2))
                     for i, k in enumerate(batch["idx_ulb"].tolist())]
            assert all(crops) if kind == "weak" else not all(crops), kind
