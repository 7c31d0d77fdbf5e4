"""What a run's math runs in: the autocast dtype of ``amp``, TF32 on CUDA, and the name the run
record gives it. One place for each, called when the :class:`~.engine.Engine` is built."""
from __future__ import annotations

import torch

from ..config import RunConfig


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA compute capability 8.0 (Ampere) or newer.
    ``torch.cuda.is_bf16_supported()`` also says yes on a T4 or V100, where bf16 is emulated
    (slower than fp16, and cuDNN has no bf16 convolutions there)."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``mode``: ``auto`` is bf16 on the CPU and on GPUs with native bf16, fp16
    (with the GradScaler) on older GPUs."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda" and not native_bf16(device):
            return torch.float16
        return torch.bfloat16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def set_precision(cfg: RunConfig, device: torch.device) -> None:
    """The one place where fp32 arithmetic on CUDA is chosen, for this process: ``tf32: true`` (the
    default, and PyTorch's own default for cuDNN convolutions) runs fp32 convolutions and matmuls on
    TF32 tensor cores (10-bit mantissa products, fp32 accumulation); ``tf32: false`` is IEEE fp32
    throughout, the official code's arithmetic, at several times the convolution time on tensor-core
    GPUs (the plan states the cost). The CPU is left as it is (IEEE fp32)."""
    if device.type != "cuda":
        return
    mode = "tf32" if cfg.tf32 else "ieee"
    torch.backends.cudnn.conv.fp32_precision = mode
    torch.backends.cuda.matmul.fp32_precision = mode


def precision_name(cfg: RunConfig, device: torch.device, dtype: torch.dtype | None) -> str:
    """What a run's math ran in, for its record: e.g. ``fp32 (TF32 convolutions and matmuls) on cuda
    (NVIDIA H100 80GB HBM3)``, ``IEEE fp32 on ...``, ``bf16 autocast on ...``, ``fp16 autocast +
    GradScaler on ...``, ``fp32 (CPU)``."""
    if dtype == torch.bfloat16:
        math = "bf16 autocast"
    elif dtype == torch.float16:
        math = "fp16 autocast + GradScaler"
    elif device.type == "cuda":
        math = "fp32 (TF32 convolutions and matmuls)" if cfg.tf32 else "IEEE fp32"
    else:
        math = "fp32"
    if device.type != "cuda":
        return f"{math} (CPU)"
    return f"{math} on cuda ({torch.cuda.get_device_name(device)})"
