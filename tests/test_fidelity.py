"""Facts the reported number rests on, each against the official code (google-research/fixmatch;
file:line in the docstrings) with hand-computed values, on both augmentation paths where there are two.

Every test here was written after breaking the fact on purpose left the rest of the suite green.
"""
import copy
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from evalset import Tensors

from fixmatch_ray.data.policies.randaugment import FILL, OpDraw, apply_draws, apply_op, cutout, cutout_box
from fixmatch_ray.data.policies.randaugment_batched import OP, _cutout_table, apply_ops, cutout_batch
from fixmatch_ray.data.policies.randaugment_policy import rand_augment_drawn
from fixmatch_ray.config import RunConfig
from fixmatch_ray.data.datasets import DATASETS
from fixmatch_ray.training.engine import Engine, fit, summarize
from fixmatch_ray.config import load_sweep
from fixmatch_ray.models import build_model
from fixmatch_ray.training.optim import build_optimizer

PATHS = pytest.mark.parametrize("path", ["pil", "tensor"])


def run_op(path: str, a: np.ndarray, name: str, level: int, sign: int = 1) -> np.ndarray:
    """One op on one HWC uint8 image through the PIL reference or the batched tensor path."""
    if path == "pil":
        return np.asarray(apply_op(Image.fromarray(a), name, level, sign)).astype(int)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()
    out = apply_ops(x, torch.tensor([OP[name]]), torch.tensor([level]), torch.tensor([sign]), torch.tensor([True]))
    return out[0].permute(1, 2, 0).numpy().astype(int)


def run_draws(path: str, a: np.ndarray, draws: list[OpDraw]) -> np.ndarray:
    """Drawn ops, uncovered pixels grey, no Cutout (size 0), through either path."""
    if path == "pil":
        return np.asarray(apply_draws(Image.fromarray(a), draws)).astype(int)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()
    col = lambda f: torch.tensor([[f(d)] for d in draws])  # noqa: E731  (rounds, 1)
    zero = torch.zeros(1, dtype=torch.long)
    out = rand_augment_drawn(x, col(lambda d: OP[d.name]), col(lambda d: d.level), col(lambda d: d.sign),
                             col(lambda d: d.apply), zero, zero, 0)
    return out[0].permute(1, 2, 0).numpy().astype(int)


def ramp(size: int = 16) -> np.ndarray:
    """Every value 0..255 once per channel (16×16), channels shifted so they differ."""
    v = np.arange(256).reshape(16, 16)
    return np.stack([v, np.roll(v, 5), np.roll(v, 99)], -1).astype(np.uint8)


# -- RandAugmentMC ops: third_party/auto_augment/augmentations.py -----------------------------------
@PATHS
def test_posterize_keeps_4_minus_int_04v_bits(path):
    """augmentations.py:265-268: ``4 - int_parameter(level, 4)`` bits; levels 1..9 give 4..1."""
    bits = {1: 4, 2: 4, 3: 3, 4: 3, 5: 2, 6: 2, 7: 2, 8: 1, 9: 1}
    white = {4: 240, 3: 224, 2: 192, 1: 128}  # 255 with the low 8 - bits bits cleared
    a = ramp()
    for level, b in bits.items():
        out = run_op(path, a, "Posterize", level)
        assert np.array_equal(out, a & (0xFF << (8 - b) & 0xFF)), level
        assert out.max() == white[b], level


@PATHS
def test_solarize_threshold_is_256_minus_int_256v_over_10(path):
    """augmentations.py:376-391: threshold ``256 - int_parameter(level, 256)``: never 0 (full invert)."""
    thresholds = {1: 231, 2: 205, 3: 180, 4: 154, 5: 128, 6: 103, 7: 77, 8: 52, 9: 26}
    a = ramp().astype(int)
    for level, t in thresholds.items():
        assert np.array_equal(run_op(path, ramp(), "Solarize", level), np.where(a >= t, 255 - a, a)), level


@PATHS
@pytest.mark.parametrize("size", [32, 16])
def test_translate_moves_v_pixels_at_any_size(path, size):
    """augmentations.py:320-360: ``int_parameter(level, 10)`` = v pixels, sign ±; uncovered pixels 0."""
    a = np.random.default_rng(size).integers(1, 256, (size, size, 3)).astype(np.uint8)
    for v in range(1, 10):
        left = run_op(path, a, "TranslateX", v, 1)  # content moves left by v
        assert np.array_equal(left[:, :-v], a[:, v:]) and np.all(left[:, -v:] == 0), v
        right = run_op(path, a, "TranslateX", v, -1)
        assert np.array_equal(right[:, v:], a[:, :-v]) and np.all(right[:, :v] == 0), v
        up = run_op(path, a, "TranslateY", v, 1)
        assert np.array_equal(up[:-v], a[v:]) and np.all(up[-v:] == 0), v


# -- Cutout: augmentations.py:66-121 (create_cutout_mask, cutout_numpy) -----------------------------
@pytest.mark.parametrize("cy, cx, box, area", [
    (0, 0, (0, 8, 0, 8), 64),  # a corner: [c - 8, c + 8) clipped, not moved inside
    (16, 16, (8, 24, 8, 24), 256),  # the middle: the whole 16 x 16
    (31, 31, (23, 32, 23, 32), 81),
    (0, 20, (0, 8, 12, 28), 128),
])
@PATHS
def test_cutout_box_is_centred_and_clipped(path, cy, cx, box, area):
    assert cutout_box(cy, cx, 32, 32, 16) == box
    a = np.full((32, 32, 3), 7, np.uint8)
    if path == "pil":
        class Centre:  # the PIL path draws the row, then the column
            def __init__(self):
                self.values = [cy, cx]

            def integers(self, lo, hi):
                return self.values.pop(0)

        out = np.asarray(cutout(Image.fromarray(a), 16, Centre()))
    else:
        x = torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()
        out = cutout_batch(x, 16, torch.tensor([cy]), torch.tensor([cx]))[0].permute(1, 2, 0).numpy()
    grey = np.all(out == FILL, -1)
    y0, y1, x0, x1 = box
    assert grey.sum() == area and grey[y0:y1, x0:x1].all()


def test_cutout_mean_area_over_centres():
    """Per axis the box is 8..16 long: lengths sum to 448 over the 32 centres, so the mean area is
    (448/32)² = 196 px (an always-inside 16 × 16 box would be 256). Half the side on 16×16: lengths
    4..8..5 sum to 112, mean area 112² / 256 = 49 px, the same 19.1 % of the image."""
    assert _cutout_table(32, 32, 16, torch.device("cpu")).sum().item() / 1024 == 196
    areas = [(y1 - y0) * (x1 - x0) for cy in range(32) for cx in range(32)
             for y0, y1, x0, x1 in [cutout_box(cy, cx, 32, 32, 16)]]
    assert statistics.mean(areas) == 196
    assert _cutout_table(16, 16, 8, torch.device("cpu")).sum().item() / 256 == 49


@PATHS
def test_stl10_randaugment_cutout_is_16px_at_96px(path):
    """The official ``cutout_numpy(img, size=16)`` (augmentations.py:102) is called without a size
    (libml/augment.py:222): a 16 × 16 box on STL-10's 96 px images too, not half the side (48).
    RandAugmentMC's ops are left out (``with_ops=False``) so the grey pixels are the box alone; a
    centre at least 8 px from every border gives the whole box: 256 px, rows and columns c − 8..c + 7."""
    from fixmatch_ray.data.policies.randaugment import cutout_size, rand_augment_mc
    from fixmatch_ray.data.policies.randaugment_policy import rand_augment_batch

    a = np.full((96, 96, 3), 7, np.uint8)
    for seed in range(40):
        if path == "pil":
            out = np.asarray(rand_augment_mc(Image.fromarray(a), np.random.default_rng(seed), with_ops=False))
            replay = np.random.default_rng(seed)  # the centre it drew: the row, then the column
            cy, cx = int(replay.integers(0, 96)), int(replay.integers(0, 96))
        else:
            x = torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()
            out = rand_augment_batch(x, torch.Generator().manual_seed(seed), with_ops=False)[0].permute(1, 2, 0).numpy()
            replay = torch.Generator().manual_seed(seed)
            cy, cx = (torch.randint(0, 96, (1,), generator=replay).item() for _ in range(2))
        grey = np.all(out == FILL, -1)
        if 8 <= cy <= 88 and 8 <= cx <= 88:
            assert grey.sum() == 256 and grey[cy - 8:cy + 8, cx - 8:cx + 8].all()
        assert grey.sum() <= 256
    # 16 px at CIFAR's 32 and STL-10's 96; the 16 px digits demo (not in the paper) keeps half its side
    assert (cutout_size(32, 32), cutout_size(96, 96), cutout_size(16, 16)) == (16, 16, 8)
    # CTAugment's own cutout op keeps its official side 1 + int(level · 96 · 0.499) = 48 at level 1
    # (libml/ctaugment.py:129-142): tests/test_ctaugment.py pins it


# -- the RGBA image of the official apply_policy: augmentations.py:152-187 --------------------------
PLAIN = np.tile(np.array([200, 100, 50], np.uint8), (32, 32, 1))
SHIFT = OpDraw("TranslateX", 3, True, 1)  # uncovers the last 3 columns


@PATHS
def test_uncovered_pixels_turn_grey_unless_an_rgb_op_made_them_black(path):
    """Geometric ops leave transparent pixels (``pil_wrap`` makes the image RGBA) that ``pil_unwrap``
    turns grey; AutoContrast converts to RGB first, so they are black and count in its range."""
    out = run_draws(path, PLAIN, [SHIFT, OpDraw("Brightness", 5, True, 1)])  # factor 1.0
    assert np.all(out[:, :29] == (200, 100, 50)) and np.all(out[:, 29:] == FILL)
    exact = np.tile(np.array([255, 51, 85], np.uint8), (32, 32, 1))  # 255/51 and 255/85 are exact
    out = run_draws(path, exact, [SHIFT, OpDraw("AutoContrast", 1, True, 1)])
    # black is each channel's minimum now: 255, 51 and 85 all stretch to 255 (grey would have been the
    # minimum of red and the maximum of green and blue)
    assert np.all(out[:, :29] == 255) and np.all(out[:, 29:] == 0)
    out = run_draws(path, PLAIN, [OpDraw("AutoContrast", 1, True, 1), SHIFT])  # other order: grey
    assert np.all(out[:, :29] == (200, 100, 50)) and np.all(out[:, 29:] == FILL)


@PATHS
def test_contrast_mean_counts_transparent_pixels_as_black(path):
    """Contrast keeps alpha but its mean grey reads the RGB of every pixel: L(200, 100, 50) = 124 on
    928 pixels and 0 on the 96 uncovered ones -> mean int(112.375 + .5) = 112; factor 0.28:
    trunc(112 + 0.28·(v − 112)) = 136, 108, 94 (grey-filled pixels would have given a mean of 124)."""
    out = run_draws(path, PLAIN, [SHIFT, OpDraw("Contrast", 1, True, 1)])
    assert np.all(out[:, :29] == (136, 108, 94)) and np.all(out[:, 29:] == FILL)


@PATHS
def test_transparent_pixels_move_with_a_second_geometric_op(path):
    """Left by 3 then right by 3: the first op's hole leaves the image, the second uncovers columns 0..2."""
    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    out = run_draws(path, a, [SHIFT, OpDraw("TranslateX", 3, True, -1)])
    assert np.all(out[:, :3] == FILL) and np.array_equal(out[:, 3:], a[:, 3:])


# -- fp32 loss math: the official code is fp32 throughout ----------------------------------------
@pytest.mark.parametrize("arch, kw", [("wideresnet", dict(depth=10, width=1)),
                                      ("resnext", dict(depth=11, width=4, cardinality=2))])
def test_classifier_head_is_fp32_under_bf16_autocast(arch, kw):
    torch.manual_seed(0)
    net = build_model(arch, 10, **kw).eval()
    fc = net.fc if arch == "wideresnet" else net.classifier
    x = torch.randn(4, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, logits = net.features(x), net(x)
        assert fc(features).dtype == torch.bfloat16  # what the head would give inside autocast
    assert features.dtype == torch.bfloat16 and logits.dtype == torch.float32
    assert torch.equal(logits, F.linear(features.float(), fc.weight, fc.bias))


def tiny_cfg(**changes) -> RunConfig:
    base = dict(dataset="digits", num_labeled=20, batch_size=2, mu=2, total_steps=4, eval_step=2, seed=0,
                depth=10, width=1, ema_decay=0.5)
    return RunConfig.from_dict({**base, **changes})


def batch(n_lb: int = 2, n_ulb: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = lambda n: torch.randn(n, 3, 16, 16, generator=g)  # noqa: E731
    return {"x_lb": [x(n_lb)], "y_lb": torch.arange(n_lb) % 10, "x_ulb": [x(n_ulb), x(n_ulb)],
            "idx_ulb": torch.arange(n_ulb)}


def test_training_and_evaluation_logits_are_fp32_under_bf16_autocast():
    trainer = Engine(tiny_cfg(amp="bf16"), torch.device("cpu"))
    dtypes = []
    for net in (trainer.net, trainer.ema.module):
        net.conv1.register_forward_hook(lambda m, i, o: dtypes.append(("body", o.dtype)))
        net.fc.register_forward_hook(lambda m, i, o: dtypes.append(("logits", o.dtype)))
    out = trainer.train_step(batch())[1].values()
    trainer.evaluate(Tensors(torch.randn(5, 3, 16, 16), torch.arange(5)), use_ema=True)
    trainer.evaluate(Tensors(torch.randn(5, 3, 16, 16), torch.arange(5)), use_ema=False)
    assert dtypes == [("body", torch.bfloat16), ("logits", torch.float32)] * 3
    assert all(t.dtype == torch.float32 for t in out)



# -- pinned facts: each was broken on purpose and the rest of the suite stayed green ---------------
def test_optimizer_decays_conv_and_dense_kernels_only():
    """ab_fixmatch_ra.py:106-107: L2 on variables named 'kernel' only, not on BatchNorm or biases."""
    net = build_model("wideresnet", 10, 10, 1)
    opt = build_optimizer(net, lr=0.1, weight_decay=0.5, momentum=0.0, nesterov=False)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(decay) == len(list(net.parameters()))  # each parameter exactly once
    names = {n: decay[id(p)] for n, p in net.named_parameters()}
    assert names["fc.weight"] == 0.5 and names["conv1.weight"] == 0.5 and names["fc.bias"] == 0.0
    assert names["bn1.weight"] == names["bn1.bias"] == names["block1.0.bn1.weight"] == 0.0
    # a step with zero gradients: decayed weights shrink by lr·wd = 5 %, the rest do not move
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in net.named_parameters():
        if p.dim() > 1:
            assert torch.allclose(p.detach(), before[n] * 0.95, rtol=1e-6, atol=0), n
        else:
            assert torch.equal(p.detach(), before[n]), n


def test_paper_metric_is_the_median_of_the_last_20_evaluations():
    """scripts/extract_accuracy.py:36: ``np.median(accuracies[-20:])``. Last 20 here: ten 50s and
    60..69 -> median (50 + 60)/2 = 55; their mean is 57.25, the last ten's median 64.5 and the
    median of all 25 is 62."""
    accs = [99.0] * 5 + [50.0] * 10 + [60.0 + i for i in range(10)]
    s = summarize([{"test_acc": a} for a in accs])
    assert s["median20_acc"] == 55.0
    assert (s["best_acc"], s["last_acc"], s["evals"]) == (99.0, 69.0, 25)
    assert s["median20_acc"] != statistics.mean(accs[-20:])


class FixedLogits(nn.Module):
    """Stands in for the network: returns given logits for the (labeled, weak, strong) batch."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.scale = logits, nn.Parameter(torch.ones(()))

    def forward(self, x):
        assert len(x) == len(self.logits)
        return self.logits * self.scale


L9 = [math.log(0.9), math.log(0.1)]  # softmax (0.9, 0.1)
LOGITS = torch.tensor([[0.0, 0.0],  # labeled, label 0: CE = ln 2
                       L9, [1.0, 0.0],  # weak: 0.9 confident at τ = 0.85; softmax(1, 0) = 0.73 is not
                       [0.0, 0.0], L9[::-1]])  # strong: CE(·, 0) = ln 2 for the first


@pytest.mark.parametrize("T, threshold, lambda_u, loss_u, mask", [
    (1.0, 0.85, 2.0, math.log(2) / 2, 0.5),  # one of two confident: ln2 / 2 over ALL μB
    (2.0, 0.85, 2.0, 0.0, 0.0),  # T = 2: softmax = (0.75, 0.25), below τ
    (1.0, 0.95, 2.0, 0.0, 0.0),  # τ = 0.95: 0.9 is below it
    (1.0, 0.85, 0.0, math.log(2) / 2, 0.5),  # supervised baseline: computed, weighted 0
])
def test_train_step_uses_the_configured_loss_and_pseudo_labels_from_the_weak_view(T, threshold, lambda_u,
                                                                                  loss_u, mask):
    """The engine passes λu, T and τ on, and the pseudo-labels come from the weak view (from the
    strong one the second sample would be confident, with CE(weak, 1) = ln(1 + e) ≠ ln 2)."""
    trainer = Engine(tiny_cfg(T=T, threshold=threshold, lambda_u=lambda_u), torch.device("cpu"))
    trainer.model = FixedLogits(LOGITS)
    _, out = trainer.train_step(batch(1, 2))
    assert out["loss_x"].item() == pytest.approx(math.log(2))
    assert out["loss_u"].item() == pytest.approx(loss_u) and out["mask"].item() == mask
    assert out["loss"].item() == pytest.approx(math.log(2) + lambda_u * loss_u)


def test_one_forward_over_labeled_weak_and_strong():
    """ab_fixmatch_ra.py:84-85: one forward, so BatchNorm's batch statistics cover all B + 2μB."""
    trainer = Engine(tiny_cfg(), torch.device("cpu"))
    sizes = []
    trainer.net.block1[0].bn1.register_forward_hook(lambda m, i, o: sizes.append(len(i[0])))
    trainer.train_step(batch(2, 4))
    assert sizes == [10]


def test_ema_starts_as_a_copy_and_uses_the_configured_decay():
    """ab_fixmatch_ra.py:110-113 (tf.train.ExponentialMovingAverage: shadows start at the values):
    after one step with decay 0.5, ema = (initial + updated) / 2."""
    trainer = Engine(tiny_cfg(), torch.device("cpu"))  # ema_decay 0.5
    initial = copy.deepcopy(trainer.net.state_dict())
    trainer.train_step(batch())
    for name, p in trainer.net.named_parameters():
        expected = 0.5 * initial[name] + 0.5 * p.detach()
        assert torch.allclose(trainer.ema.module.state_dict()[name], expected, atol=1e-7), name
    for name, b in trainer.net.named_buffers():  # BatchNorm statistics: the live ones
        assert torch.equal(trainer.ema.module.state_dict()[name], b), name


def test_reported_accuracy_is_the_ema_model_in_eval_mode():
    """ab_fixmatch_ra.py:123: the reported classifier is the EMA one, inference-mode BatchNorm."""
    trainer = Engine(tiny_cfg(total_steps=2, eval_step=2), torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, 16, 16, generator=g), torch.arange(12) % 10
    steps = iter([batch(seed=s) for s in range(2)])
    record = fit(trainer, steps, Tensors(x, y))[-1]
    ema, raw = trainer.ema.module.eval(), trainer.net.eval()
    with torch.no_grad():
        expected, other = F.cross_entropy(ema(x), y).item(), F.cross_entropy(raw(x), y).item()
        batch_stats = F.cross_entropy(copy.deepcopy(ema).train()(x), y).item()
    assert record["test_loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - other) > 1e-3 and abs(expected - batch_stats) > 1e-3  # they can be told apart


def test_initialisation_is_the_official_one():
    """models.py:70, 97: conv kernels N(0, 1/(0.5·k²·out)) (fan-out), dense Glorot normal."""
    torch.manual_seed(0)
    net = build_model("wideresnet", 10, 28, 2)
    conv = net.block2[0].conv1  # 32 -> 64 channels, 3x3: fan-in and fan-out differ
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.03)  # fan-in: 0.083
    short = net.block2[0].conv_shortcut  # 1x1, 64 outputs
    assert short.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.05)
    assert net.fc.weight.std().item() == pytest.approx(math.sqrt(2 / (128 + 10)), rel=0.05)


def test_residual_blocks_are_the_official_pre_activation_ones():
    """models.py:72-84: x = act(bn(x0)); the shortcut takes x instead of x0 only in the first block
    (activate_before_residual); a width change convolves the shortcut."""
    torch.manual_seed(0)
    net = build_model("wideresnet", 10, 10, 2).eval()  # 16 -> 32 -> 64 -> 128 channels
    act = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
    with torch.no_grad():
        for block, stem_activated, inp in ((net.block1[0], True, torch.randn(2, 16, 8, 8)),
                                           (net.block2[0], False, torch.randn(2, 32, 8, 8))):
            a = act(block.bn1(inp))
            body = block.conv2(act(block.bn2(block.conv1(a))))
            expected = block.conv_shortcut(a if stem_activated else inp) + body
            assert torch.allclose(block(inp.clone()), expected, atol=1e-6)


def test_flips_only_where_the_label_survives():
    """libml/augment.py:343-352: CIFAR mirrors and shifts, SVHN (digits, like digits here) only shifts."""
    assert DATASETS["cifar10"].flip and DATASETS["cifar100"].flip and not DATASETS["digits"].flip


def test_paper_sweep_is_fp32_with_the_official_defaults():
    """ab_fixmatch_ra.py:150-161 and fixmatch.py defaults; the paper ran fp32 (TF1)."""
    spec = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "paper.yaml")
    for t in spec.trials:
        r = t.run
        assert r.amp == "off" and r.arch == "wideresnet" and r.aug_backend in ("pil", "tensor")
        assert (r.momentum, r.nesterov, r.warmup, r.options.T, r.options.lambda_u, r.use_ema, r.bn_momentum) == (
            0.9, True, 0.0, 1.0, 1.0, True, 0.001)
    c = RunConfig()
    assert (c.momentum, c.options.T, c.warmup, c.bn_momentum, c.amp) == (0.9, 1.0, 0.0, 0.001, "off")


SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
PAPER_DATASETS = {"cifar10", "cifar100", "svhn", "svhn_extra", "stl10"}


def test_reference_sweeps_train_without_autocast():
    """The official code is fp32 throughout: every sweep file on a paper dataset (paper.yaml,
    table2.yaml, barely.yaml, every ablation on CIFAR-10) resolves to amp off in every trial; the
    one cheaper variant is its own, named file (table2_bf16.yaml), and trains bf16 throughout."""
    reference = {}
    for path in sorted(SWEEPS.rglob("*.yaml")):
        trials = load_sweep(path).trials
        if {t.run.dataset for t in trials} & PAPER_DATASETS and not path.stem.endswith("_bf16"):
            reference[path.relative_to(SWEEPS).as_posix()] = {t.run.amp for t in trials}
    assert {"paper.yaml", "table2.yaml", "barely.yaml", "ablations/threshold.yaml", "ablations/mu.yaml",
            "ablations/optimizer.yaml", "ablations/schedule.yaml", "ablations/sharpening.yaml",
            "ablations/augmentation.yaml", "ablations/mean_teacher.yaml", "ablations/weight_decay.yaml"} <= set(reference)
    assert reference == {name: {"off"} for name in reference}
    variant = load_sweep(SWEEPS / "table2_bf16.yaml")
    assert {t.run.amp for t in variant.trials} == {"bf16"} and variant.name != load_sweep(SWEEPS / "table2.yaml").name


def _is_reflect_crop(view: np.ndarray, img: np.ndarray, pad: int) -> bool:
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    return any(np.array_equal(view, padded[t:t + h, s:s + w]) for t in range(2 * pad + 1) for s in range(2 * pad + 1))


@pytest.mark.parametrize("backend", ["pil", "tensor"])
def test_labeled_images_get_the_weak_view(backend):
    """ab_fixmatch_ra.py:93 with augment 'd.d.rac': labeled images are only flipped and shifted
    (digits: shifted), never RandAugment'ed or cut out."""
    from fixmatch_ray.data.sampling import LABELED, StepDataset
    from fixmatch_ray.training.loop import load_run_data, step_batches

    cfg = tiny_cfg(batch_size=8, aug_backend=backend)
    data = load_run_data(cfg)
    mean, std = np.array(data.spec.mean), np.array(data.spec.std)
    if backend == "pil":
        ds = StepDataset(data.train, data.spec, cfg.seed)
        keys = [(LABELED, 0, j, int(i)) for j, i in enumerate(data.labeled_idx[:8])]
        views, index = torch.stack([ds[k][1][0] for k in keys]), [k[3] for k in keys]
    else:
        it = step_batches(cfg, data, 0, device=torch.device("cpu"))
        index = [k[3] for k in it.sampler.keys(0) if k[0] == LABELED]
        views = next(it)["x_lb"][0]
    u8 = np.rint((views.permute(0, 2, 3, 1).numpy() * std + mean) * 255).astype(np.uint8)
    for view, i in zip(u8, index):
        assert _is_reflect_crop(view, data.train.images[i], 2)


def test_each_step_uses_the_cosine_rate_of_its_step():
    """ab_fixmatch_ra.py:77-78: lr · cos(7π·k / 16K) at step k (K = 4 here, no warmup)."""
    trainer = Engine(tiny_cfg(lr=0.1), torch.device("cpu"))
    for k in range(4):
        trainer.train_step(batch(seed=k))
        for group in trainer.optimizer.param_groups:
            assert group["lr"] == pytest.approx(0.1 * math.cos(7 * math.pi * k / 64)), k
