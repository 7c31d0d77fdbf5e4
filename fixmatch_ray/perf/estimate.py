"""The plan's step times and memory needs where nothing was measured: a stated model over the
counts of :mod:`.counts` and a card's data sheet (:mod:`.cards`). Estimates, printed as such.

**GPU time.** Every op of the step (forward, loss, backward, optimizer, EMA; CTAugment's probe and
rate update) takes the longer of its FLOPs at :data:`E_COMPUTE` of the card's peak for the
precision and its bytes at :data:`E_MEMORY` of the memory bandwidth, and at least
:data:`KERNEL_US`; the augmentation's ops (weak, strong, probes) likewise. ``+compile`` keeps
:data:`COMPILE_BYTES` of the memory-bound ops' traffic and :data:`COMPILE_KERNELS` of their kernels
(fusion of BatchNorm, LeakyReLU and the residual adds).

**Host time.** Each eager op costs :data:`HOST_US` of the CPU (Python, dispatcher, launch); the
GPU runs ahead until the CPU is the slower side. An augmentation replayed as one CUDA graph
(``cuda_graphs: true``) costs :data:`GRAPH_US`. The step takes the longer of GPU and host time.

**DDP.** G ranks each do 1/G of the FLOPs and bytes but launch every kernel (the host time does not
shrink), plus a ring all-reduce of the fp32 gradients, 2·(G−1)/G of their bytes at
:data:`LINK_GB_S` (NVLink-class, one node), not overlapped: a GPU-hour estimate on the safe side.

**Memory.** Autograd's saved activations (counted per image) + the operands of the step's largest
op (held at once while it runs: the gradients in flight) + parameters, gradients, momentum and the
EMA copy in fp32 + the resident training set (uint8; the 18 crop variants where they fit 6 GiB) +
:data:`OVERHEAD_GIB` for the CUDA context, cuDNN workspaces and allocator slack.
"""
from __future__ import annotations

from dataclasses import dataclass

from .cards import CARDS, DEFAULT_CARD, Card
from .counts import MODELS, POLICY_SHAPE, load_counts, ops_at

E_COMPUTE = 0.6  # of the peak FLOP/s that cuDNN convolutions reach on wide layers
E_MEMORY = 0.8  # of the memory bandwidth that memory-bound kernels reach
KERNEL_US = 2.0  # GPU time of the smallest kernel, back to back
HOST_US = 8.0  # CPU time per eager op that launches a kernel (Python modules, autograd, dispatch, launch)
GRAPH_US = 20.0  # CPU time to replay one captured CUDA graph
COMPILE_BYTES = 0.5  # torch.compile: traffic of memory-bound ops left after fusion
COMPILE_KERNELS = 0.4  # torch.compile: memory-bound kernels left after fusion
LINK_GB_S = 100.0  # all-reduce bus bandwidth between the GPUs of one node
OVERHEAD_GIB = 2.0  # CUDA context, cuDNN workspaces, allocator slack
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257, "stl10": 105_000, "digits": 1_797}
CROP_STORE_MAX = 6 << 30  # data.batched.CropStore's default max_bytes


@dataclass(frozen=True)
class Estimate:
    ms: float  # one step on one rank
    gpu_ms: float
    host_ms: float
    kernels: int  # eager launches per step (the augmentation's counted as one graph when captured)


def _counted(precision: str) -> str:
    return "bf16" if precision.removesuffix("+compile") in ("bf16", "fp16") else "fp32"


def known(key: str, policy: str) -> bool:
    counts = load_counts()
    return key in counts["models"] and policy in counts["models"][key] and policy in counts["augmentation"]


def step_estimate(key: str, precision: str, policy: str, images: int, card: Card | None = None,
                  cuda_graphs: bool = True, workers: int = 1) -> Estimate:
    """The model's ms per step of network ``key`` (a :data:`.counts.MODELS` key) at a step-time
    precision key (``off``, ``ieee``, ``bf16``, ``fp16``, optionally ``+compile``) with ``policy``,
    ``images`` images a step (the global batch), on ``card`` (default H100), per DDP rank."""
    card = card or CARDS[DEFAULT_CARD]
    compiled, base = precision.endswith("+compile"), precision.removesuffix("+compile")
    counts = load_counts()
    step = counts["models"][key][policy][_counted(base)]
    peak, bandwidth = card.tflops(base) * 1e12 * E_COMPUTE, card.memory_tb_s * 1e12 * E_MEMORY
    gpu_s, kernels = 0.0, 0.0
    for _name, flops, nbytes, n in ops_at(step, images / workers):
        if compiled and flops == 0:
            nbytes, n = nbytes * COMPILE_BYTES, n * COMPILE_KERNELS
        gpu_s += n * max(flops / peak, nbytes / bandwidth, KERNEL_US * 1e-6)
        kernels += n
    aug = counts["augmentation"][policy]
    scale = images / (aug["batch_size"] * (1 + 2 * aug["mu"])) * (MODELS[key][1] / aug["image_size"]) ** 2
    aug_kernels = 0
    for _name, nbytes, n in aug["ops"]:
        gpu_s += n * max(nbytes * scale / workers / bandwidth, KERNEL_US * 1e-6)
        aug_kernels += n
    if workers > 1:
        gpu_s += 2 * (workers - 1) / workers * step["params"] * 4 / (LINK_GB_S * 1e9)
    host_s = kernels * HOST_US * 1e-6 + (GRAPH_US * 1e-6 if cuda_graphs else aug_kernels * HOST_US * 1e-6)
    launches = round(kernels) + (1 if cuda_graphs else aug_kernels)
    return Estimate(1e3 * max(gpu_s, host_s), 1e3 * gpu_s, 1e3 * host_s, launches)


def ddp_speedup(key: str, precision: str, policy: str, images: int, workers: int, card: Card | None = None,
                cuda_graphs: bool = True) -> float:
    """How much faster ``workers`` DDP ranks run a step than one GPU, by the model above."""
    one = step_estimate(key, precision, policy, images, card, cuda_graphs).ms
    return one / step_estimate(key, precision, policy, images, card, cuda_graphs, workers).ms


def memory_gib(key: str, precision: str, policy: str, images: int, dataset: str, workers: int = 1) -> float:
    """GiB of GPU memory one rank of a trial needs (the model above; ``images`` a step, global)."""
    step = load_counts()["models"][key][policy][_counted(precision.removesuffix("+compile"))]
    side = MODELS[key][1]
    activations = step["saved_bytes_per_image"] * images / workers
    transient = max(nbytes for _name, _flops, nbytes, _n in ops_at(step, images / workers))  # the largest op's operands
    weights = 4 * 4 * step["params"]  # fp32 parameters, gradients, momentum, EMA
    stored = TRAIN_IMAGES.get(dataset, 50_000) * 3 * side * side
    variants = (2 * int(0.125 * side) + 1) * 2
    store = stored * variants if stored * variants <= CROP_STORE_MAX else stored
    return (activations + transient + weights + store) / 2**30 + OVERHEAD_GIB


def basis(card: Card, cuda_graphs: bool = True) -> str:
    """One line: what the estimates rest on."""
    return (f"estimate for one {card.name} ({card.sheet}: {card.tf32 or card.fp32:g} TFLOP/s TF32, "
            f"{card.bf16 or card.fp16:g} bf16/fp16, {card.fp32:g} IEEE fp32, {card.memory_tb_s:g} TB/s): FLOPs and "
            f"bytes of every op of the step counted by the code (perf/counts.json), each op at the slower of "
            f"{E_COMPUTE:.0%} of peak and {E_MEMORY:.0%} of bandwidth (at least {KERNEL_US:g} us), host "
            f"{HOST_US:g} us per eager kernel, augmentation "
            f"{'one CUDA graph' if cuda_graphs else 'eager'}; DDP: 1/G of the work per rank, every kernel still "
            f"launched, gradients all-reduced at {LINK_GB_S:g} GB/s; not measurements: run "
            "`python -m fixmatch_ray.bench gpu --out FILE` on the card and pass --step-times FILE")
