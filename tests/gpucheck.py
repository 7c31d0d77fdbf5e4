"""The GPU suite's checks, written for any device: ``tests/test_gpu.py`` runs them on CUDA and
``tests/test_gpu_selfcheck.py`` runs them on the CPU here, so a mistake in a check (a wrong
signature, a wrong expectation) shows up without a GPU. Each returns what it measured."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fixmatch_ray.config import Resources, RunConfig
from fixmatch_ray.data.batched import CropStore
from fixmatch_ray.data.policies.randaugment import OP_NAMES
from fixmatch_ray.data.policies.randaugment_batched import apply_ops, cutout_batch
from fixmatch_ray.data.policies.randaugment_policy import draw_ops, rand_augment_drawn
from fixmatch_ray.training.engine import Engine
from fixmatch_ray.training.loop import load_run_data, step_batches

CPU = torch.device("cpu")
# digits (16x16, local): a real DeviceBatches run without a download
CFG = RunConfig(dataset="digits", num_labeled=20, batch_size=8, mu=2, total_steps=40, eval_step=20, seed=3,
                aug_backend="tensor", depth=10, width=1, num_workers=0)


def images(n: int = 16, size: int = 32, seed: int = 0) -> np.ndarray:
    """Random HWC uint8 images, half of them low-contrast (AutoContrast/Equalize do real work)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
    a[n // 2:] = a[n // 2:] // 4 + 60
    return a


def to_t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


def ops_match_the_cpu(device: torch.device, size: int = 32) -> int:
    """Every op, level 1..9 and sign on ``device`` (its default path: dense on CUDA) equals both CPU
    paths bit for bit (every op is integer or exact float arithmetic: no tolerance). Returns cases."""
    x = to_t(images(size=size))
    n, cases = len(x), 0
    for i, name in enumerate(OP_NAMES):
        for level in range(1, 10):
            for sign in (1, -1):
                args = [torch.full((n,), i), torch.full((n,), level), torch.full((n,), sign), torch.ones(n, dtype=torch.bool)]
                out = apply_ops(x.to(device), *(a.to(device) for a in args)).cpu()
                for dense in (False, True):
                    assert torch.equal(out, apply_ops(x, *args, dense=dense)), (name, level, sign, dense)
                cases += 1
    return cases


def cutout_matches_the_cpu(device: torch.device) -> None:
    """Cutout boxes (corners clipped) and the uncovered-pixel grey, on ``device`` as on the CPU."""
    x = to_t(images(n=8))
    g = torch.Generator().manual_seed(5)
    cy, cx = torch.randint(0, 32, (2, 8), generator=g)
    cy[:2], cx[:2] = 0, 31
    hole = (torch.rand(8, 32 * 32, generator=g) < 0.1).to(torch.uint8)
    for h in (None, hole):
        out = cutout_batch(x.to(device), 16, cy.to(device), cx.to(device), None if h is None else h.to(device))
        assert torch.equal(out.cpu(), cutout_batch(x, 16, cy, cx, h))


def rand_augment_matches_the_cpu(device: torch.device, n: int = 300, size: int = 32) -> None:
    """Two rounds, uncovered pixels and Cutout under the same (CPU-drawn) parameters: the device's
    batch is the CPU's, bit for bit (the generators differ by device, so draws are made once)."""
    x = to_t(images(n=n, size=size, seed=2))
    g = torch.Generator().manual_seed(size)
    draws = draw_ops(n, g, CPU)
    cy, cx = torch.randint(0, size, (2, n), generator=g)
    out = rand_augment_drawn(x.to(device), *(d.to(device) for d in draws), cy.to(device), cx.to(device), size // 2)
    for dense in (False, True):
        assert torch.equal(out.cpu(), rand_augment_drawn(x, *draws, cy, cx, size // 2, dense=dense)), dense


def reflect_crops(img: np.ndarray, pad: int) -> list[np.ndarray]:
    """Every weak view of ``img``, indexed mirror·O² + top·O + left (O = 2·pad+1)."""
    h, w = img.shape[:2]
    p = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return [c[t:t + h, l:l + w] for c in (p, p[:, ::-1]) for t in range(2 * pad + 1) for l in range(2 * pad + 1)]


def crop_layouts_match_their_draws(device: torch.device, size: int = 32, n: int = 40) -> None:
    """Both crop-store layouts (18 tabulated column variants, and the column gather) on ``device``:
    each crop is exactly the reflect crop its own draws name (replayed from the same seed on the
    same device: coin, then top and left, as :meth:`CropStore.crop` draws them)."""
    data = images(n=n + 10, size=size)
    index = torch.arange(5, 5 + n, device=device)
    pad = size // 8
    o = 2 * pad + 1
    for flip in (False, True):
        for tabulated in (True, False):
            store = CropStore(to_t(data).to(device), flip, max_bytes=1 << 30 if tabulated else 0)
            assert store.tabulated == tabulated and store.data.device.type == device.type
            out = store.crop(index, torch.Generator(device=device).manual_seed(9)).permute(0, 2, 3, 1).cpu().numpy()
            g = torch.Generator(device=device).manual_seed(9)
            coin = torch.randint(0, 2, (n,), generator=g, device=device) if flip else torch.zeros(n, dtype=torch.long)
            top, left = torch.randint(0, o, (2, n), generator=g, device=device)
            view = (coin.cpu() * o * o + top.cpu() * o + left.cpu()).tolist()
            for i, k in enumerate(index.tolist()):
                assert np.array_equal(out[i], reflect_crops(data[k], pad)[view[i]]), (flip, tabulated, i)


def device_batches_are_keyed_and_sliced(device: torch.device, cfg: RunConfig = CFG) -> dict[str, torch.Tensor]:
    """DeviceBatches on ``device``: the same step twice gives the same batch, on the device; two
    ranks' slices (``Rows``) join to the one-worker batch. Returns one batch."""
    data = load_run_data(cfg)
    first = step_batches(cfg, data, 2, device=device)
    again = step_batches(cfg, data, 2, device=device)
    halves = [step_batches(cfg, data, 2, r, 2, device) for r in range(2)]
    for _ in range(3):
        full, same, a, b = next(first), next(again), next(halves[0]), next(halves[1])
        for key in ("x_lb", "y_lb", "x_ulb", "idx_ulb"):
            views = (lambda batch: batch[key] if isinstance(batch[key], list) else [batch[key]])  # noqa: E731
            for v_full, v_same, v_a, v_b in zip(views(full), views(same), views(a), views(b), strict=True):
                assert v_full.device.type == device.type, key
                assert torch.equal(v_full, v_same), key
                assert torch.equal(torch.cat([v_a, v_b]), v_full), key
    assert not torch.equal(full["x_ulb"][0], full["x_ulb"][1])
    return full


def trainer_and_batches(device: torch.device, cfg: RunConfig = CFG):
    data = load_run_data(cfg)
    trainer = Engine(cfg, device, num_unlabeled=len(data.train))
    return trainer, step_batches(cfg, data, 0, device=device), data


def amp_dtypes(device: torch.device, amp: str) -> torch.dtype:
    """The first convolution's output dtype in a real step under ``amp``; the GradScaler is on only
    for fp16, and the step's loss is finite."""
    trainer, batches, _ = trainer_and_batches(device, CFG.replace(amp=amp))
    seen = []
    conv = next(m for m in trainer.net.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        loss, _ = trainer.train_step(next(batches))
    finally:
        handle.remove()
    assert trainer.scaler.is_enabled() == (amp == "fp16"), amp
    assert bool(torch.isfinite(loss)), amp
    return seen[0]


def layout_and_optimizer(device: torch.device) -> dict[str, bool]:
    """channels_last weights, and what the SGD runs as (fused on CUDA, foreach elsewhere)."""
    trainer, batches, _ = trainer_and_batches(device)
    trainer.train_step(next(batches))
    convs = [m.weight for m in trainer.net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    group = trainer.optimizer.param_groups[0]
    return {"channels_last": all(w.is_contiguous(memory_format=torch.channels_last) for w in convs),
            "fused": bool(group.get("fused")), "foreach": bool(group.get("foreach"))}


def checkpoint_round_trip(device: torch.device, tmp_path) -> dict:
    """Save after 3 steps on ``device``, reload (map_location cpu, as the loader does) into a fresh
    trainer: the same weights, and the next step's loss bit for bit the uninterrupted run's."""
    from fixmatch_ray.training.checkpoint import load_checkpoint, save_checkpoint

    trainer, batches, data = trainer_and_batches(device)
    for _ in range(3):
        trainer.train_step(next(batches))
    save_checkpoint(tmp_path, trainer.state_dict())
    state, _ = load_checkpoint(tmp_path)
    resumed = Engine(CFG, device, num_unlabeled=len(data.train))
    resumed.load_state_dict(state)
    for k, v in trainer.net.state_dict().items():
        assert torch.equal(resumed.net.state_dict()[k], v), k
    cont = step_batches(CFG, data, resumed.step, device=device)
    a, _ = trainer.train_step(next(batches))
    b, _ = resumed.train_step(next(cont))
    assert resumed.step == trainer.step == 4
    assert torch.equal(a, b) or device.type == "cuda" and torch.allclose(a, b, rtol=1e-5)  # cuDNN may not be bitwise
    return state


def probed_run(cfg: RunConfig, resources: Resources, storage: Path, name: str) -> list[dict]:
    """One Train run of the real entry point (``launch.worker.train_loop_per_worker``) in a loop
    defined here (so Ray ships it by value), each rank recording after training its device, whether
    CUDA was initialised in the process, and the process group's backend; the ranks' records."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from fixmatch_ray.launch.worker import train_loop_per_worker

    probe_dir = storage / f"{name}-probe"
    probe_dir.mkdir(parents=True)

    def loop(config):
        import torch as t
        import torch.distributed as dist

        train_loop_per_worker(config)
        ctx = ray.train.get_context()
        doc = {"rank": ctx.get_world_rank(), "cuda_initialized": t.cuda.is_initialized(),
               "device": str(ray.train.torch.get_device()),
               "backend": dist.get_backend() if dist.is_initialized() else None}
        if doc["cuda_initialized"]:
            doc["uuid"] = str(t.cuda.get_device_properties(t.cuda.current_device()).uuid)
        (probe_dir / f"rank{doc['rank']}.json").write_text(json.dumps(doc))

    TorchTrainer(
        loop, train_loop_config={"run": cfg.to_dict(), "run_dir": str(storage / name)},
        scaling_config=ray.train.ScalingConfig(num_workers=resources.workers, use_gpu=resources.use_gpu,
                                               resources_per_worker=resources.per_worker()),
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage),
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
    ).fit()
    return [json.loads(p.read_text()) for p in sorted(probe_dir.glob("rank*.json"))]


class StandInCapture:
    """A CPU stand-in for a CUDA graph capture (``data.graphs.cuda_capture``): captures ``fn`` on given
    input tensors; a replay runs it again on those very tensors and copies the result into the
    captured outputs, as a graph writes where it allocated at capture."""

    def __init__(self):
        self.captures = self.replays = 0

    def __call__(self, fn, gen, *inputs):
        from torch.utils._pytree import tree_flatten

        self.captures += 1
        out = fn(*inputs)

        def replay():
            self.replays += 1
            for dst, src in zip(tree_flatten(out)[0], tree_flatten(fn(*inputs))[0]):
                if isinstance(dst, torch.Tensor):
                    dst.copy_(src)

        return replay, out


def graphed_batches_equal_eager(device: torch.device, policy: str, steps: int = 6, capture=None) -> bool:
    """Batches of the captured-augmentation path equal the eager path's, step by step, with a
    learning policy's state moving between steps (the same update on both). ``capture``: a stand-in
    for the CPU (where ``cuda_graphs`` is off); on CUDA the real graph. Returns whether it captured."""
    from torch.utils._pytree import tree_flatten

    from fixmatch_ray.data.graphs import StepGraph
    from fixmatch_ray.data.policies import build_policy

    cfg = CFG.replace(policy=policy)
    data = load_run_data(cfg)
    pols = [build_policy(policy, device) for _ in range(2)]
    eager = step_batches(cfg.replace(cuda_graphs=False), data, 0, device=device, policy=pols[0])
    graphed = step_batches(cfg, data, 0, device=device, policy=pols[1])
    if capture is not None:
        graphed.graph = StepGraph(graphed._augment, graphed.gen, capture)
    for step in range(steps):
        a, b = next(eager), next(graphed)
        assert a.keys() == b.keys()
        for key in a:
            for x, y in zip(tree_flatten(a[key])[0], tree_flatten(b[key])[0]):
                assert torch.equal(x, y), (policy, step, key)
        if pols[0].learns:  # the same update on both: the replay must draw from the moved rates
            for p, batch in zip(pols, (a, b)):
                n = len(batch["y_lb"])
                probs = torch.full((n, 10), 0.05, device=device).index_fill(1, torch.tensor([step % 10], device=device), 0.55)
                p.learn(batch["probe"], probs, batch["y_lb"])
    if pols[0].learns:
        assert torch.equal(pols[0].batched.rates, pols[1].batched.rates)
        assert not torch.equal(pols[1].batched.rates, torch.ones_like(pols[1].batched.rates))
    return graphed.graphed
