"""Networks of the FixMatch paper: WideResNet-d-k (any number of stages) and ResNeXt, as the official code builds them.

Leaky ReLU with slope 0.1 and BatchNorm momentum 0.001 (PyTorch's convention: the running
statistics move by 0.1% a step, the official TF decay of 0.999). Depth and width are free so
tests can use tiny nets. The final Linear runs in fp32 outside any autocast (:func:`head`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.001
LEAKY_SLOPE = 0.1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


def head(fc: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """Logits of ``fc`` in fp32 on fp32 features, autocast off: the pseudo-label softmax, the
    0.95 mask, both cross-entropies and the accuracy come from fp32 logits whatever the body's
    precision (the official code is fp32 throughout)."""
    with torch.autocast(features.device.type, enabled=False):
        return fc(features.float())


class ExtraHeads:
    """Extra linear heads on the pooled features, beside the classifier (an algorithm's auxiliary
    task, e.g. ReMixMatch's rotation): ``net(x, head=name)`` gives that head's fp32 logits. A net
    without extra heads has the same parameters and state keys as before."""

    def add_heads(self, sizes: dict[str, int]) -> None:
        """Add a ``nn.Linear(features, n)`` per ``name: n`` (Glorot-normal weights, zero bias: the
        official ``tf.layers.dense(..., kernel_initializer=glorot_normal)``)."""
        classifier = self.classifier_layer()
        for name, n in sizes.items():
            layer = nn.Linear(classifier.in_features, n).to(classifier.weight.device)
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
            self.heads[name] = layer

    def logits(self, features: torch.Tensor, name: str | None) -> torch.Tensor:
        if name is None:
            return head(self.classifier_layer(), features)
        if name not in self.heads:
            raise ValueError(f"the network has no head {name!r}; it has {', '.join(self.heads) or 'none'}")
        return head(self.heads[name], features)


class BasicBlock(nn.Module):
    """Pre-activation residual block; the first block of a WRN activates before the shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0,
                 activate_before_residual: bool = False):
        super().__init__()
        self.bn1, self.relu1 = _bn(in_planes), _act()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2, self.relu2 = _bn(out_planes), _act()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.conv_shortcut = None if in_planes == out_planes else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)
        self.activate_before_residual = activate_before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As the official (TF) residual(): the first conv always sees bn+relu of the input; the
        # shortcut takes the activated input only in the stage's first block. (The PyTorch port
        # convolves the raw input when channels change, leaving bn1 unused there.)
        out = self.relu1(self.bn1(x))
        if self.activate_before_residual:
            x = out
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + out


def _stage(n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float, abr: bool) -> nn.Sequential:
    return nn.Sequential(*[
        BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate, abr and i == 0)
        for i in range(n)
    ])


class WideResNet(ExtraHeads, nn.Module):
    """WRN-depth-k with ``scales`` stages (3: the CIFAR net) of n blocks, 16k·2^i channels in stage i.

    The official ``libml/models.py`` ResNet: a 16-channel stem conv, then ``scales`` stages of
    ``repeat`` = n residual blocks with ``filters << i`` channels (``filters`` = 16k), the first at
    stride 1, each later one halving the resolution. ``depth`` counts the weight layers as the WRN
    names do: the stem, 2 convs per block and one 1×1 shortcut per stage (the channels change at
    every stage's first block), so depth = 1 + scales·(2n + 1): 6n + 4 for 3 scales (WRN-28: n = 4),
    37 for 4 scales of 4 blocks, 46 for 5 (the official STL-10 net, see ``build_model``).
    """

    def __init__(self, num_classes: int, depth: int = 28, widen_factor: int = 2, drop_rate: float = 0.0,
                 scales: int = 3):
        super().__init__()
        if scales < 1:
            raise ValueError(f"wideresnet scales {scales} is invalid: expected >= 1 stages (3 for 32x32 images)")
        per = 2 * scales  # 2 convs per block in every stage
        if depth < 1 + 3 * scales or (depth - 1 - scales) % per:
            valid = ", ".join(str(1 + scales * (2 * n + 1)) for n in range(1, 5))
            raise ValueError(f"wideresnet depth {depth} is invalid with {scales} scales: expected "
                             f"1 + {scales}·(2n+1) with n >= 1 ({valid}, ...)")
        if widen_factor < 1:
            raise ValueError(f"wideresnet width {widen_factor} is invalid: expected >= 1")
        n = (depth - 1 - scales) // per
        ch = [16] + [16 * widen_factor << i for i in range(scales)]
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        # block1, block2, ...: the names of the 3-stage net, so its checkpoints keep their keys
        self.stages = [f"block{i + 1}" for i in range(scales)]
        for i, name in enumerate(self.stages):
            self.add_module(name, _stage(n, ch[i], ch[i + 1], 2 if i else 1, drop_rate, i == 0))
        self.bn1, self.relu = _bn(ch[-1]), _act()
        self.fc = nn.Linear(ch[-1], num_classes)
        self.heads = nn.ModuleDict()
        _init(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the classifier reads (in the autocast dtype, if any)."""
        out = self.conv1(x)
        for name in self.stages:
            out = getattr(self, name)(out)
        out = self.relu(self.bn1(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def classifier_layer(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor, head: str | None = None) -> torch.Tensor:
        return self.logits(self.features(x), head)


class ResNeXtBottleneck(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, cardinality: int, base_width: int, widen_factor: int):
        super().__init__()
        d = cardinality * base_width * out_ch // (widen_factor * 64)
        self.conv_reduce = nn.Conv2d(in_ch, d, 1, 1, 0, bias=False)
        self.bn_reduce = _bn(d)
        self.conv_conv = nn.Conv2d(d, d, 3, stride, 1, groups=cardinality, bias=False)
        self.bn = _bn(d)
        self.conv_expand = nn.Conv2d(d, out_ch, 1, 1, 0, bias=False)
        self.bn_expand = _bn(out_ch)
        self.act = _act()
        self.shortcut = nn.Sequential()
        if in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False), _bn(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn_reduce(self.conv_reduce(x)))
        out = self.act(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        return self.act(self.shortcut(x) + out)


class CifarResNeXt(ExtraHeads, nn.Module):
    """ResNeXt-29 for 32x32 images (the port's alternative ``--arch resnext``)."""

    def __init__(self, cardinality: int, depth: int, num_classes: int, base_width: int, widen_factor: int = 4):
        super().__init__()
        if depth < 11 or (depth - 2) % 9:
            raise ValueError(f"resnext depth {depth} is invalid: expected 9n+2 with n >= 1 (11, 20, 29, ...)")
        n = (depth - 2) // 9
        st = [64, 64 * widen_factor, 128 * widen_factor, 256 * widen_factor]
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = _bn(64)
        self.act = _act()
        stages = []
        for i, stride in enumerate((1, 2, 2)):
            stages.append(nn.Sequential(*[
                ResNeXtBottleneck(st[i] if j == 0 else st[i + 1], st[i + 1], stride if j == 0 else 1,
                                  cardinality, base_width, widen_factor) for j in range(n)
            ]))
        self.stage_1, self.stage_2, self.stage_3 = stages
        self.classifier = nn.Linear(st[3], num_classes)
        self.heads = nn.ModuleDict()
        _init(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the classifier reads (in the autocast dtype, if any)."""
        x = self.act(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def classifier_layer(self) -> nn.Linear:
        return self.classifier

    def forward(self, x: torch.Tensor, head: str | None = None) -> torch.Tensor:
        return self.logits(self.features(x), head)


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(arch: str, num_classes: int, depth: int | None = None, width: int | None = None,
                cardinality: int | None = None, drop_rate: float = 0.0,
                bn_momentum: float = BN_MOMENTUM, scales: int | None = None,
                heads: dict[str, int] | None = None) -> nn.Module:
    """``wideresnet`` (default WRN-28-2) or ``resnext`` (default ResNeXt-29, 4x4).

    ``scales`` (wideresnet only; default 3) is the number of stages, the official ``--scales``:
    ``fixmatch.py`` uses ``ceil(log2(image side)) − 2`` unless the flag is set, 3 at 32 px and 5 at
    96 px. Its STL-10 net (filters 32, repeat 4, 5 scales) is WRN-46-2 here, 23.8M parameters:
    the count the paper gives for what it calls "WRN-37-2" (a name that fits 4 scales, 5.9M).

    ``bn_momentum`` is the paper's 0.001 unless a short run needs its BatchNorm statistics to
    settle sooner (after k steps they have moved 1 - 0.999^k of the way: 45 % after 600).
    ``heads`` adds extra heads (:class:`ExtraHeads`), drawn after every other weight.
    """
    if arch == "wideresnet":
        net: nn.Module = WideResNet(num_classes, depth or 28, width or 2, drop_rate, 3 if scales is None else scales)
    elif scales not in (None, 3):
        raise ValueError(f"scales {scales} applies to wideresnet only; {arch} has 3 stages")
    elif arch == "resnext":
        net = CifarResNeXt(cardinality or 4, depth or 29, num_classes, width or 4)
    else:
        raise ValueError(f"unknown arch {arch!r}: expected one of wideresnet, resnext")
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = bn_momentum
    if heads:
        net.add_heads(heads)  # type: ignore[operator]
    return net


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
