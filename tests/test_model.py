import pytest
import torch
from torch import nn

from fixmatch_ray.models.wideresnet import BN_MOMENTUM, build_model, count_params


def test_paper_param_counts():
    assert count_params(build_model("wideresnet", 10, 28, 2)) == 1_467_610  # WRN-28-2: 1.47M
    assert round(count_params(build_model("wideresnet", 100, 28, 8)) / 1e6, 1) == 23.4  # WRN-28-8


def test_official_details():
    net = build_model("wideresnet", 10, 10, 1)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == BN_MOMENTUM == 0.001 for m in bns)
    acts = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    assert acts and all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.1 for m in acts)
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    assert torch.all(net.fc.bias == 0)


@pytest.mark.parametrize("size", [32, 16])
def test_shapes_and_channels_last(size):
    torch.manual_seed(0)
    net = build_model("wideresnet", 7, 10, 1).eval()
    x = torch.randn(3, 3, size, size)
    y = net(x)
    assert y.shape == (3, 7)
    y_cl = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(y, y_cl, atol=1e-5)


def test_every_parameter_gets_a_gradient():
    # DDP without find_unused_parameters needs every parameter in the graph
    net = build_model("wideresnet", 10, 10, 2)
    net(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_resnext_tiny():
    net = build_model("resnext", 10, depth=11, width=4, cardinality=2)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("args, match", [
    (("wideresnet", 10, 27), "depth 27"),
    (("resnext", 10, 28), "depth 28"),
    (("vit", 10), "unknown arch 'vit'"),
])
def test_bad_shapes(args, match):
    with pytest.raises(ValueError, match=match):
        build_model(*args)


def test_bn_momentum_override():
    net = build_model("wideresnet", 10, 10, 1, bn_momentum=0.01)
    assert {m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}
