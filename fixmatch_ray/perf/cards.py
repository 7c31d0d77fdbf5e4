"""GPUs the plan can estimate for: peak dense throughput per precision and memory bandwidth, from
NVIDIA's data sheets (the dense figures: half the "with sparsity" ones), and memory.

``tf32`` is the tensor-core rate of fp32 convolutions and matmuls with TF32 on (V100 and T4 have no
TF32: fp32 runs on CUDA cores there whatever the setting); ``bf16`` is None where the card has no
native bf16 (``amp: auto`` takes fp16 + GradScaler there; an explicit bf16 is emulated at fp32 rate).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Card:
    name: str
    fp32: float  # TFLOP/s, IEEE fp32 (CUDA cores)
    tf32: float | None  # TFLOP/s, TF32 tensor cores (dense)
    bf16: float | None  # TFLOP/s, bf16 tensor cores (dense); None: no native bf16
    fp16: float  # TFLOP/s, fp16 tensor cores (dense)
    memory_tb_s: float  # memory bandwidth, TB/s
    memory_gb: float  # on-board memory, GB (10^9 bytes, as data sheets give it)
    sheet: str  # which data sheet

    def tflops(self, precision: str) -> float:
        """Peak TFLOP/s of convolutions at a step-time precision key (``off`` = fp32 with TF32)."""
        if precision == "off":
            return self.tf32 or self.fp32
        if precision == "ieee":
            return self.fp32
        if precision == "bf16":
            return self.bf16 or self.fp32  # emulated where not native
        return self.fp16

    @property
    def memory_gib(self) -> float:
        return self.memory_gb * 1e9 / 2**30


CARDS: dict[str, Card] = {c.name: c for c in (
    Card("H100", 67.0, 494.7, 989.4, 989.4, 3.35, 80, "H100 SXM5 80GB data sheet"),
    Card("H200", 67.0, 494.7, 989.4, 989.4, 4.8, 141, "H200 SXM data sheet"),
    Card("A100", 19.5, 156.0, 312.0, 312.0, 2.039, 80, "A100 SXM4 80GB data sheet"),
    Card("A10G", 31.2, 62.5, 125.0, 125.0, 0.6, 24, "A10 data sheet (AWS publishes no A10G sheet; g5 instances)"),
    Card("L4", 30.3, 60.0, 121.0, 121.0, 0.3, 24, "L4 data sheet"),
    Card("V100", 15.7, None, None, 125.0, 0.9, 32, "V100 SXM2 data sheet"),
    Card("T4", 8.1, None, None, 65.0, 0.32, 16, "T4 data sheet"),
)}
DEFAULT_CARD = "H100"


def find_card(name: str | None) -> Card | None:
    """The card a device or accelerator name means (``NVIDIA H100 80GB HBM3``, ``Tesla V100-SXM2-16GB``,
    Ray's ``A10G``), or None. A card's memory in the name wins over the table's (V100 16 GB)."""
    if not name:
        return None
    upper = name.upper()
    for key in sorted(CARDS, key=len, reverse=True):
        if key in upper:
            card = CARDS[key]
            for gb in (16, 24, 32, 40, 48, 80, 94, 141):
                if f"{gb}GB" in upper.replace(" ", "").replace("-", "") and gb != card.memory_gb:
                    from dataclasses import replace

                    return replace(card, memory_gb=float(gb))
            return card
    return None


def accelerator_card(resources: dict[str, float]) -> Card | None:
    """The card of a Ray cluster whose nodes label their GPUs (``accelerator_type:A10G``); None when
    the cluster names none, or several different ones."""
    names = {k.split(":", 1)[1] for k, v in resources.items() if k.startswith("accelerator_type:") and v > 0}
    cards = {find_card(n) for n in names} - {None}
    return cards.pop() if len(cards) == 1 else None
