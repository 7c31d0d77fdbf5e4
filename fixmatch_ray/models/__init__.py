"""Networks of the paper: WideResNet-28-k and ResNeXt."""

from .wideresnet import build_model

__all__ = ["build_model"]
