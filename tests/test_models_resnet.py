"""DeepLab v3 / v3+ (deeplab_lessons.models.resnet): shapes, dilations, torchvision cross-check, training."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from deeplab_lessons.models import resnet as R
from deeplab_lessons.models import ASPP, aspp_rates

SMALL = 0.125  # width of the tiny test networks


def _convs(module: nn.Module) -> list[tuple]:
    """(kernel, stride, dilation, padding) of every Conv2d, in registration order."""
    return [(m.kernel_size, m.stride, m.dilation, m.padding) for m in module.modules() if isinstance(m, nn.Conv2d)]


def _torchvision_trunk(tv_resnet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    t = tv_resnet.maxpool(tv_resnet.relu(tv_resnet.bn1(tv_resnet.conv1(x))))
    return tv_resnet.layer4(tv_resnet.layer3(tv_resnet.layer2(tv_resnet.layer1(t))))


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("output_stride, expected", [(16, 4), (8, 8)])
def test_v3_logits_at_output_stride(output_stride, expected):
    torch.manual_seed(0)
    model = R.deeplab_v3(num_classes=5, output_stride=output_stride, width=SMALL).eval()
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5, expected, expected)
    assert model.output_stride == output_stride
    feats = model.backbone(torch.randn(1, 3, 64, 96))
    assert feats["out"].shape == (1, model.backbone.out_channels, 64 // output_stride, 96 // output_stride)
    assert feats["low_level"].shape == (1, model.backbone.low_level_channels, 16, 24)


def test_width_scales_every_channel():
    full, quarter = R.DilatedResNet(width=1.0), R.DilatedResNet(width=0.25)
    assert (full.low_level_channels, full.out_channels) == (256, 2048)  # ResNet-50, He et al. Table 1
    assert (quarter.low_level_channels, quarter.out_channels) == (64, 512)
    assert quarter.conv1.out_channels == 16
    # bottleneck convs scale quadratically: parameters shrink ~16x
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 14 < n(full) / n(quarter) < 17
    tv = torchvision.models.resnet50(weights=None)
    assert n(full) == n(tv) - tv.fc.weight.numel() - tv.fc.bias.numel()


def test_v3plus_logits_at_stride_4_and_odd_sizes():
    torch.manual_seed(0)
    model = R.deeplab_v3plus(num_classes=3, width=SMALL).eval()
    assert model.output_stride == 4
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3, 16, 16)
    # sizes that are not multiples of the stride: the decoder follows layer1's grid
    x = torch.randn(1, 3, 65, 77)
    assert model(x).shape[-2:] == model.backbone(x)["low_level"].shape[-2:] == (17, 20)


def test_decoder_shapes_and_layers():
    dec = R.DeepLabV3PlusDecoder(low_level_channels=16, encoder_channels=32, reduced_channels=6, channels=24)
    out = dec(torch.randn(2, 32, 4, 5), torch.randn(2, 16, 16, 20))
    assert out.shape == (2, 24, 16, 20)
    full = R.deeplab_v3plus(width=1.0).decoder
    # 1x1 to 48 channels on the 256-channel layer1 output, then two 3x3 convs of 256 (v3+ Sec. 4.1)
    assert (full.reduce[0].in_channels, full.reduce[0].out_channels, full.reduce[0].kernel_size) == (256, 48, (1, 1))
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in full.fuse if isinstance(c, nn.Conv2d)] == [
        (256 + 48, 256, (3, 3)), (256, 256, (3, 3))]


def test_decoder_upsamples_encoder_bilinearly():
    """The decoder's first 3x3 conv sees [bilinear upsample of the encoder, reduced low-level features]."""
    torch.manual_seed(0)
    dec = R.DeepLabV3PlusDecoder(8, 4, reduced_channels=2, channels=5).eval()
    enc, low = torch.randn(1, 4, 3, 3), torch.randn(1, 8, 12, 12)
    seen = {}
    dec.fuse[0].register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    dec(enc, low)
    expected = F.interpolate(enc, size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seen["x"][:, :4], expected)
    torch.testing.assert_close(seen["x"][:, 4:], dec.reduce(low))


# ---------------------------------------------------------------- dilations


@pytest.mark.parametrize("output_stride, layer3, layer4", [
    (16, [1] * 6, [2, 4, 8]),           # the paper's example: 2 * (1, 2, 4)
    (8, [1, 2, 2, 2, 2, 2], [4, 8, 16]),
])
def test_multi_grid_rates_in_block4(output_stride, layer3, layer4):
    model = R.deeplab_v3(output_stride=output_stride, multi_grid=(1, 2, 4), width=SMALL)
    bb = model.backbone
    assert [b.conv2.dilation for b in bb.layer4] == [(r, r) for r in layer4]
    assert [b.conv2.padding for b in bb.layer4] == [(r, r) for r in layer4]  # "same" convs
    assert [b.conv2.dilation[0] for b in bb.layer3] == layer3
    assert R.unit_dilations(bb)["layer4"] == layer4
    # no stride left past the output stride: layer4 (and layer3 at OS 8) keep the resolution
    assert all(m.stride == (1, 1) for m in bb.layer4.modules() if isinstance(m, nn.Conv2d))
    if output_stride == 8:
        assert all(m.stride == (1, 1) for m in bb.layer3.modules() if isinstance(m, nn.Conv2d))


def test_multi_grid_other_rates_and_errors():
    bb = R.deeplab_v3(output_stride=16, multi_grid=(1, 1, 1), width=SMALL).backbone
    assert R.unit_dilations(bb)["layer4"] == [2, 2, 2]
    bb = R.deeplab_v3(output_stride=16, multi_grid=(2, 2, 2), width=SMALL).backbone
    assert R.unit_dilations(bb)["layer4"] == [4, 4, 4]
    with pytest.raises(ValueError, match="multi_grid"):
        R.deeplab_v3(multi_grid=(1, 2), width=SMALL)
    with pytest.raises(ValueError, match="output_stride"):
        R.deeplab_v3(output_stride=32, width=SMALL)
    with pytest.raises(ValueError, match="backbone"):
        R.deeplab_v3(backbone="vgg16", width=SMALL)
    with pytest.raises(ValueError, match="width"):
        R.deeplab_v3(width=0)


@pytest.mark.parametrize("output_stride, replace", [(16, [False, False, True]), (8, [False, True, True])])
def test_no_multi_grid_is_torchvision_dilation_rule(output_stride, replace):
    ours = R.DilatedResNet(output_stride=output_stride, multi_grid=None)
    tv = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=replace)
    assert _convs(ours) == _convs(tv)


def test_resnet101_units():
    bb = R.deeplab_v3(backbone="resnet101", width=SMALL).backbone
    assert [len(getattr(bb, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]


# ---------------------------------------------------------------- torchvision cross-check


def test_cross_check_torchvision_deeplabv3_resnet50():
    torch.manual_seed(0)
    tv = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21).eval()
    assert tv.aux_classifier is None  # aux head only with aux_loss=True
    ours = R.deeplab_v3(num_classes=21, output_stride=8, multi_grid=None).eval()
    # backbone: same modules, same output stride 8, and with the same weights the same features
    R.transplant_resnet(ours, tv.backbone.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = tv.backbone(x)["out"]
        torch.testing.assert_close(ours.backbone(x)["out"], ref)
    assert ref.shape[-1] == 64 // 8
    # ASPP: at output stride 8 both use rates (12, 24, 36), 256 channels, 5 branches (1x1, three 3x3, pooling)
    assert tuple(aspp_rates(8)) == (12, 24, 36)
    tv_aspp = tv.classifier[0]
    tv_rates = sorted(m.dilation[0] for m in tv_aspp.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    our_rates = sorted(m.dilation[0] for m in ours.aspp.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert our_rates == tv_rates == [12, 24, 36]
    assert sorted(p.numel() for p in ours.aspp.parameters()) == sorted(p.numel() for p in tv_aspp.parameters())
    # the one structural difference in the head: torchvision's extra 3x3 conv (256 -> 256) + BN
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(tv) - n(ours) == 256 * 256 * 9 + 2 * 256
    # torchvision upsamples to the input inside forward; ours returns stride-8 logits
    with torch.no_grad():
        assert tv(x)["out"].shape == (1, 21, 64, 64)
        assert ours(x).shape == (1, 21, 8, 8)


def test_cross_check_aspp_against_torchvision():
    """Same weights in, same ASPP features out (eval mode: BN running stats, no dropout)."""
    torch.manual_seed(0)
    tv_aspp = torchvision.models.segmentation.deeplabv3.ASPP(64, (12, 24, 36), out_channels=32).eval()
    ours = ASPP(64, out_channels=32, atrous_rates=(12, 24, 36)).eval()
    tv_tensors = [t for k, t in tv_aspp.state_dict().items() if not k.endswith("num_batches_tracked")]
    our_keys = [k for k in ours.state_dict() if not k.endswith("num_batches_tracked")]
    assert sorted(t.shape for t in tv_tensors) == sorted(ours.state_dict()[k].shape for k in our_keys)
    for m in tv_aspp.modules():  # non-trivial BN statistics so a mix-up of tensors shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    ours.load_state_dict(dict(zip(our_keys, [t.clone() for k, t in tv_aspp.state_dict().items()
                                             if not k.endswith("num_batches_tracked")])), strict=False)
    x = torch.randn(2, 64, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv_aspp(x))


# ---------------------------------------------------------------- ImageNet weights


def test_transplant_resnet_loads_torchvision_weights_and_rejects_mismatch():
    tv = torchvision.models.resnet50(weights=None)
    model = R.deeplab_v3(num_classes=4, output_stride=16)
    R.transplant_resnet(model, tv.state_dict())
    torch.testing.assert_close(model.backbone.layer4[2].conv3.weight, tv.layer4[2].conv3.weight)
    with pytest.raises(ValueError, match="width=1.0"):
        R.transplant_resnet(R.deeplab_v3(width=0.5), tv.state_dict())
    with pytest.raises(ValueError, match="resnet101"):
        R.transplant_resnet(R.deeplab_v3(backbone="resnet101", width=SMALL), tv.state_dict())


def test_pretrained_backbone_path_uses_torchvision_weights(monkeypatch):
    stand_in = torchvision.models.resnet50(weights=None).state_dict()
    seen = {}

    def fake_load(url, *args, **kwargs):
        seen["url"] = url
        return stand_in

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_load)
    model = R.deeplab_v3plus(pretrained_backbone=True)
    assert seen["url"] == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    torch.testing.assert_close(model.backbone.conv1.weight, stand_in["conv1.weight"])
    with pytest.raises(ValueError, match="width=1.0"):
        R.deeplab_v3(pretrained_backbone=True, width=0.25)


def test_pretrained_backbone_offline_says_what_to_do(monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="pretrained_backbone=False"):
        R.deeplab_v3(pretrained_backbone=True)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("builder", [R.deeplab_v3, R.deeplab_v3plus])
def test_train_steps_decrease_loss_on_a_fixed_batch(builder):
    torch.manual_seed(0)
    model = builder(num_classes=3, width=SMALL, aspp_dropout=0.0)
    x = torch.randn(2, 3, 64, 64)
    target = 1 + (torch.arange(64)[None, :, None] >= 32).long().expand(2, 64, 64).clone()
    target[:, :, :8] = 0
    target[:, :2] = 255  # ignored pixels take no part
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def loss_fn():
        up = F.interpolate(model(x), size=(64, 64), mode="bilinear", align_corners=False)
        return F.cross_entropy(up, target, ignore_index=255)

    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(loss_fn().item())
    assert losses[-1] < 0.92 * losses[0], losses


@pytest.mark.parametrize("builder", [R.deeplab_v3, R.deeplab_v3plus])
def test_classifier_parameters_split(builder):
    model = builder(num_classes=7, width=SMALL)
    cls = list(model.classifier_parameters())
    assert [tuple(p.shape) for p in cls] == [(7, model.classifier.in_channels, 1, 1), (7,)]
    rest = list(model.backbone_parameters())
    assert len(cls) + len(rest) == len(list(model.parameters()))
    assert not {id(p) for p in cls} & {id(p) for p in rest}
    assert float(model.classifier.weight.detach().std()) < 0.02  # N(0, 0.01) init, as v1's fc8


def test_registry_builds_v3_models_by_name():
    from deeplab_lessons.models import build_model

    model = build_model("v3plus", num_classes=3, width=SMALL)
    assert isinstance(model, R.DeepLabV3Plus) and model.output_stride == 4
    assert model.backbone.name == "resnet50"  # what the trainer passes to imagenet_resnet_state_dict
    assert R.deeplab_v3(backbone="resnet101", width=SMALL).backbone.name == "resnet101"
    assert build_model("v3", num_classes=3, width=SMALL, output_stride=8).output_stride == 8


def test_v3_ablations_of_table5():
    from deeplab_lessons.models import ImagePooling, build_model

    full = build_model("v3", width=0.125)
    no_pool = build_model("v3-no-image-pooling", width=0.125)
    mg111 = build_model("v3-multigrid-111", width=0.125)
    assert any(isinstance(b, ImagePooling) for b in full.aspp.branches)
    for net in (no_pool, mg111):
        assert len(net.aspp.branches) == 4 and not any(isinstance(b, ImagePooling) for b in net.aspp.branches)
        assert net.aspp.project.conv.in_channels == 4 * net.aspp.branches[0][0].out_channels
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 21, 4, 4)
    # block4's unit rates at output stride 16: dilation 2 x multi-grid
    rates = lambda net: [u.conv2.dilation[0] for u in net.backbone.layer4]
    assert rates(full) == [2, 4, 8] and rates(mg111) == [2, 2, 2]
