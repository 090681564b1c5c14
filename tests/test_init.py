"""Looks-linear delta-orthogonal initialisation (deeplab_lessons.models.init)."""

import math

import pytest
import torch
from torch import nn

from deeplab_lessons.models import deeplab_v1
from deeplab_lessons.models import looks_linear_
from deeplab_lessons.models import build_model, classifier_parameters


def _chain() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=2, dilation=2),
                         nn.ReLU(), nn.Conv2d(12, 12, 1), nn.ReLU())


def test_chain_starts_as_an_isometric_linear_map():
    torch.manual_seed(0)
    net = looks_linear_(_chain())
    x = torch.randn(2, 3, 9, 11)
    out = net(x)
    half = out.shape[1] // 2
    diff = out[:, :half] - out[:, half:]                 # relu(h) - relu(-h) = h
    # the pre-activation is an orthogonal map of each pixel's colour, scaled by the ReLU gain per layer
    gain = math.sqrt(2) ** 3
    torch.testing.assert_close(diff.norm(dim=1), gain * x.norm(dim=1), rtol=1e-5, atol=1e-5)
    # and linear: f(a x + b y) = a f(x) + b f(y) for the paired difference
    y = torch.randn_like(x)
    lin = lambda z: (lambda o: o[:, :half] - o[:, half:])(net(z))  # noqa: E731
    torch.testing.assert_close(lin(2 * x - 3 * y), 2 * lin(x) - 3 * lin(y), rtol=1e-4, atol=1e-4)


def test_only_the_centre_tap_is_set_and_classifier_is_kept():
    torch.manual_seed(0)
    model = deeplab_v1(width=0.125)
    fc8 = model.head.fc8.weight.clone()
    looks_linear_(model, skip=model.classifier_parameters())
    assert torch.equal(model.head.fc8.weight, fc8)
    fc6 = model.head.fc6.weight
    assert fc6.shape[-2:] == (3, 3)
    off_centre = fc6.clone(); off_centre[..., 1, 1] = 0
    assert off_centre.abs().max() == 0 and fc6[..., 1, 1].abs().max() > 0
    assert all(float(m.bias.detach().abs().max()) == 0 for m in model.modules()
               if isinstance(m, nn.Conv2d) and m is not model.head.fc8)


def test_mirrored_pairs():
    torch.manual_seed(0)
    conv = looks_linear_(nn.Sequential(nn.Conv2d(6, 10, 3)))[0]
    w = conv.weight[..., 1, 1]
    torch.testing.assert_close(w[:5, :3], -w[:5, 3:])
    torch.testing.assert_close(w[:5], -w[5:])


def test_even_kernels_start_linear_on_their_central_taps():
    """A 4x4 kernel has no centre tap: the paired matrix is split over the central 2x2 taps, so
    the layer is the same linear map of the 4 central positions' average (relu(h) - relu(-h) = h)."""
    even, odd = nn.Sequential(nn.Conv2d(3, 8, 4)), nn.Sequential(nn.Conv2d(3, 8, 3))
    torch.manual_seed(0)
    conv = looks_linear_(even)[0]
    w = conv.weight
    outer = torch.ones(4, 4, dtype=torch.bool)
    outer[1:3, 1:3] = False
    assert w[..., outer].abs().max() == 0
    taps = [w[..., r, c] for r in (1, 2) for c in (1, 2)]
    assert all(torch.equal(t, taps[0]) for t in taps)
    torch.manual_seed(0)
    odd = looks_linear_(odd)[0]
    torch.testing.assert_close(4 * taps[0], odd.weight[..., 1, 1])
    x = torch.randn(1, 3, 4, 4)                          # one output; only its 2x2 central window counts
    pre = conv(x)[0, :, 0, 0]
    torch.testing.assert_close(pre, (4 * taps[0]) @ x[0, :, 1:3, 1:3].mean((1, 2)))
    torch.testing.assert_close(pre[:4], -pre[4:])        # the mirrored pair: relu(h) - relu(-h) = h


def test_build_model_auto_init():
    torch.manual_seed(0)
    vgg = build_model("largefov", width=0.125, norm="batch", init="auto", dropout=0.0)
    conv = vgg.features.conv1_1[0]
    assert conv.weight[..., 0, 0].abs().max() == 0          # looks-linear: only the centre tap
    assert all(m.p == 0.0 for m in vgg.modules() if isinstance(m, nn.Dropout))
    head = {id(p) for p in classifier_parameters(vgg)}
    assert id(vgg.head.fc8.weight) in head
    he = build_model("largefov", width=0.125, init="he")
    assert he.features.conv1_1.weight[..., 0, 0].abs().max() > 0
    assert all(m.p == 0.5 for m in he.modules() if isinstance(m, nn.Dropout))
    with pytest.raises(ValueError, match="init"):
        build_model("largefov", width=0.125, init="xavier")
    with pytest.raises(ValueError, match="dropout"):
        build_model("largefov", width=0.125, dropout=1.5)


def test_zero_residual_blocks_start_as_identity():
    from deeplab_lessons.models import DilatedResNet
    from deeplab_lessons.models import zero_residual_

    torch.manual_seed(0)
    trunk = DilatedResNet("resnet50", output_stride=16, width=0.125).eval()
    zero_residual_(trunk)
    block = trunk.layer2[1]                                     # no downsample: x + F(x) with F = 0
    x = torch.rand(1, block.conv1.in_channels, 6, 7)            # post-ReLU input, non-negative
    torch.testing.assert_close(block(x), x)
    with pytest.raises(ValueError, match="residual"):
        zero_residual_(_chain())
    v3 = build_model("v3", width=0.125, init="auto")
    assert all(float(m.bn3.weight.detach().abs().max()) == 0 for m in v3.modules() if hasattr(m, "bn3"))
