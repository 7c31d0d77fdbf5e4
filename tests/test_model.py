import pytest
import torch
from torch import nn

from fixmatch_ray.models.wideresnet import BN_MOMENTUM, build_model, count_params


def test_paper_param_counts():
    assert count_params(build_model("wideresnet", 10, 28, 2)) == 1_467_610  # WRN-28-2: 1.47M
    assert round(count_params(build_model("wideresnet", 100, 28, 8)) / 1e6, 1) == 23.4  # WRN-28-8


def official_resnet_params(scales: int, filters: int, repeat: int, num_classes: int) -> int:
    """Parameters of the official libml/models.py ResNet, counted by hand from its definition:
    stem 3x3 conv to 16; per stage i (filters << i channels, ``repeat`` blocks): bn, 3x3 conv,
    bn, 3x3 conv per block, a 1x1 shortcut where the channels change; final bn; dense layer."""
    total, c_in = 3 * 16 * 9, 16
    for i in range(scales):
        c = filters << i
        for b in range(repeat):
            cin = c_in if b == 0 else c
            total += 2 * cin + 9 * cin * c + 2 * c + 9 * c * c + (cin * c if cin != c else 0)
        c_in = c
    return total + 2 * c_in + c_in * num_classes + num_classes


def test_stl10_network_is_the_official_five_scale_resnet():
    # fixmatch.py at 96 px: scales = ceil(log2(96)) - 2 = 5, filters 32, repeat 4
    net = build_model("wideresnet", 10, 46, 2, scales=5)
    assert count_params(net) == official_resnet_params(5, 32, 4, 10) == 23_765_978  # the paper's 23.8M
    # the name "WRN-37-2" counts 4 scales: 1 + 4 * (2*4 + 1) weight layers, but 5.9M parameters
    assert count_params(build_model("wideresnet", 10, 37, 2, scales=4)) == official_resnet_params(4, 32, 4, 10)
    assert round(official_resnet_params(4, 32, 4, 10) / 1e6, 1) == 5.9
    assert count_params(build_model("wideresnet", 10, 28, 2)) == official_resnet_params(3, 32, 4, 10)
    sides = []
    for name in net.stages:
        getattr(net, name).register_forward_hook(lambda m, i, o: sides.append(tuple(o.shape[1:])))
    net.eval()(torch.zeros(1, 3, 96, 96))
    assert sides == [(32, 96, 96), (64, 48, 48), (128, 24, 24), (256, 12, 12), (512, 6, 6)]


def test_three_scales_keep_the_checkpoint_keys():
    keys = build_model("wideresnet", 10, 10, 1).state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"conv1", "block1", "block2", "block3", "bn1", "fc"}


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
    (("wideresnet", 10, 28, 2, None, 0.0, 0.001, 5), "depth 28 is invalid with 5 scales"),
    (("wideresnet", 10, 10, 1, None, 0.0, 0.001, 0), "scales 0"),
    (("resnext", 10, 29, 4, 4, 0.0, 0.001, 5), "wideresnet only"),
])
def test_bad_shapes(args, match):
    with pytest.raises(ValueError, match=match):
        build_model(*args)


def test_bn_momentum_override():
    net = build_model("wideresnet", 10, 10, 1, bn_momentum=0.01)
    assert {m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}


def test_extra_heads_read_the_pooled_features_and_leave_the_rest_as_it_was():
    torch.manual_seed(0)
    plain = build_model("wideresnet", 10, depth=10, width=1)
    torch.manual_seed(0)
    net = build_model("wideresnet", 10, depth=10, width=1, heads={"rotation": 4})
    # the same other weights (the heads are drawn last) and no new keys without heads
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in plain.state_dict().items())
    assert set(net.state_dict()) - set(plain.state_dict()) == {"heads.rotation.weight", "heads.rotation.bias"}
    net.eval()
    x = torch.randn(3, 3, 32, 32)
    rot = net(x, head="rotation")
    assert rot.shape == (3, 4) and rot.dtype == torch.float32
    head = net.heads["rotation"]
    assert torch.allclose(rot, net.features(x) @ head.weight.T + head.bias, atol=1e-5)
    assert torch.equal(net(x), plain.eval()(x))
    with pytest.raises(ValueError, match="no head 'jigsaw'; it has rotation"):
        net(x, head="jigsaw")
