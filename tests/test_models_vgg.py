"""DeepLab v1/v2 on VGG16: output sizes, parameter counts, weight surgery, stride-8 vs dense."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from deeplab_lessons.atrous import atrous_equivalence_error
from deeplab_lessons.inference import predict
from deeplab_lessons.receptive_field import receptive_fields
from deeplab_lessons.models import (
    check_vgg16_state_dict,
    conv_macs,
    decimation_indices,
    IMAGENET_MEAN,
    IMAGENET_STD,
    deeplab_v1,
    deeplab_v2,
    imagenet_vgg16_state_dict,
    normalize,
    transplant_vgg16,
    upsample_logits,
    vgg16_features,
)

TINY = 0.125


def _vgg16_conv_params(width_channels=(64, 128, 256, 512, 512), convs=(2, 2, 3, 3, 3)) -> int:
    total, cin = 0, 3
    for c, n in zip(width_channels, convs):
        for _ in range(n):
            total += 9 * cin * c + c
            cin = c
    return total


def _head_params(kernel: int, channels: int, classes: int = 21, cin: int = 512) -> int:
    return kernel * kernel * cin * channels + channels + channels * channels + channels + channels * classes + classes


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def vgg16_sd():
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).state_dict()


@pytest.mark.parametrize("fov,size", [("largefov", (64, 64)), ("largefov", (65, 63)), ("largefov", (70, 57)),
                                      ("largefov", (321, 33)), ("7x7", (65, 64)), ("4x4", (63, 66))])
def test_output_size_on_each_trunk(fov, size):
    """LargeFOV trunk: ceil(H / 8). DeepLab trunk: three 2x2/2 pools with padding 1 and Caffe's
    ceil rounding (H -> floor(H / 2) + 1 each), then pool4 2x2/1 (-1)."""
    torch.manual_seed(0)
    model = deeplab_v1(num_classes=5, fov=fov, width=TINY).eval()
    out = model(torch.randn(1, 3, *size))

    def deeplab_trunk(n):
        for _ in range(3):
            n = n // 2 + 1
        return n - 1

    expected = [math.ceil(n / 8) if fov == "largefov" else deeplab_trunk(n) for n in size]
    assert out.shape == (1, 5, *expected)


def test_released_v1_trunks_give_the_papers_fields_and_sizes():
    """v1 Sec. 3.2: 404 px (fc6 7x7, rate 4) and 308 px (4x4, rate 4) on the DeepLab trunk;
    its 306-px crops give 39 x 39 scores. The LargeFOV trunk adds 31 px: 15 from its 3x3 pools
    in blocks 1-4 (1 + 2 + 4 + 8) and 16 from pool5a (2 x 8)."""
    expect = {("7x7", None): (404, "deeplab"), ("4x4", None): (308, "deeplab"), ("largefov", None): (435, "largefov"),
              ("7x7", "largefov"): (435, "largefov"), ("4x4", "largefov"): (339, "largefov"),
              ("largefov", "deeplab"): (404, "deeplab")}
    for (fov, trunk), (field, built) in expect.items():
        model = deeplab_v1(fov=fov, trunk=trunk, width=TINY).eval()
        assert model.trunk == built
        rows = receptive_fields(model, 306)
        assert [r.size for r in rows if r.name.endswith("fc6")] == [field], (fov, trunk)
        assert [r.size for r in rows if r.name.endswith("pool5")] == [212 if built == "deeplab" else 227]
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 306, 306)).shape[-2:] == (39, 39)
    with pytest.raises(ValueError, match="trunk must be one of"):
        deeplab_v1(trunk="vgg")


def test_papers_sizes_321_and_513():
    model = deeplab_v1(width=1 / 16).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 321, 513)).shape[-2:] == (41, 65)


@pytest.mark.parametrize("fov,kernel,channels,paper_millions", [
    ("largefov", 3, 1024, 20.5), ("7x7", 7, 4096, 134.3), ("4x4", 4, 4096, 65.1)])
def test_width1_parameter_counts(fov, kernel, channels, paper_millions):
    with torch.device("meta"):
        model = deeplab_v1(fov=fov)
    expected = _vgg16_conv_params() + _head_params(kernel, channels)
    assert _count(model) == expected
    assert round(expected / 1e6, 1) == paper_millions  # v1 Table 2


def test_v2_parameter_count_is_trunk_plus_four_largefov_heads():
    with torch.device("meta"):
        model = deeplab_v2(aspp="L")
    assert _count(model) == _vgg16_conv_params() + 4 * _head_params(3, 1024)


def test_width_scales_every_channel():
    model = deeplab_v1(width=0.25)
    assert model.features.conv1_1.out_channels == 16
    assert model.features.conv5_3.out_channels == 128
    assert model.head.fc6.out_channels == 256 and model.head.fc8.out_channels == 21


@pytest.mark.parametrize("fov,kernel,rate", [("largefov", 3, 12), ("7x7", 7, 4), ("4x4", 4, 4)])
def test_fc6_geometry(fov, kernel, rate):
    fc6 = deeplab_v1(fov=fov, width=TINY).head.fc6
    assert fc6.kernel_size == (kernel, kernel) and fc6.dilation == (rate, rate)
    assert deeplab_v1(fov="4x4", width=TINY, fc6_rate=8).head.fc6.dilation == (8, 8)


def test_trunk_strides_and_dilations():
    f = vgg16_features(TINY, "largefov")
    assert [f.get_submodule(f"pool{i}").stride for i in range(1, 6)] == [2, 2, 2, 1, 1]
    assert all(f.get_submodule(f"conv5_{i}").dilation == (2, 2) for i in (1, 2, 3))
    assert f.conv4_3.dilation == (1, 1)
    assert isinstance(f.pool5a, torch.nn.AvgPool2d)


@pytest.mark.parametrize("kwargs,word", [
    ({"num_classes": 0}, "num_classes"), ({"num_classes": "21"}, "num_classes"), ({"num_classes": True}, "num_classes"),
    ({"fov": "large"}, "fov"), ({"width": 0}, "width"), ({"width": -1.0}, "width"), ({"fc6_rate": 0}, "fc6_rate")])
def test_v1_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        deeplab_v1(**kwargs)


@pytest.mark.parametrize("kwargs,word", [({"aspp": "M"}, "aspp"), ({"num_classes": -3}, "num_classes")])
def test_v2_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        deeplab_v2(**kwargs)


def test_classifier_and_backbone_parameters_partition_the_model():
    for model, n_cls in ((deeplab_v1(width=TINY), 2), (deeplab_v2(width=TINY), 8)):
        cls = list(model.classifier_parameters())
        rest = list(model.backbone_parameters())
        assert len(cls) == n_cls
        assert {id(p) for p in cls}.isdisjoint(id(p) for p in rest)
        assert len(cls) + len(rest) == len(list(model.parameters()))
        assert all(p.shape[0] == 21 for p in cls)


def test_v2_branch_rates_and_sum():
    torch.manual_seed(0)
    model = deeplab_v2(num_classes=4, aspp="S", width=TINY).eval()
    assert [b.fc6.dilation[0] for b in model.aspp.branches] == [2, 4, 8, 12]
    assert [b.fc6.dilation[0] for b in deeplab_v2(aspp="L", width=TINY).aspp.branches] == [6, 12, 18, 24]
    x = torch.randn(1, 3, 64, 72)
    with torch.no_grad():
        feats = model.features(x)
        by_hand = sum(branch(feats) for branch in model.aspp.branches)
        out = model(x)
    assert out.shape == (1, 4, 8, 9)
    torch.testing.assert_close(out, by_hand)


# ---------------------------------------------------------------- weight surgery

def test_decimation_indices():
    taps, filters = decimation_indices(3, 1024)
    assert taps.tolist() == [0, 3, 6] and filters[:3].tolist() == [0, 4, 8] and len(filters) == 1024
    assert decimation_indices(4, 4096)[0].tolist() == [0, 2, 4, 6]
    assert decimation_indices(7, 4096)[1].tolist() == list(range(4096))
    with pytest.raises(ValueError, match="kernel_size"):
        decimation_indices(5, 1024)
    with pytest.raises(ValueError, match="channels"):
        decimation_indices(3, 1000)


def test_transplant_copies_convs_and_decimates_fc6_fc7(vgg16_sd):
    torch.manual_seed(1)
    model = deeplab_v1(num_classes=21, fov="largefov")
    fc8_before = model.head.fc8.weight.clone()
    transplant_vgg16(model, vgg16_sd)
    assert torch.equal(model.features.conv1_1.weight, vgg16_sd["features.0.weight"])
    assert torch.equal(model.features.conv5_3.bias, vgg16_sd["features.28.bias"])
    fc6 = vgg16_sd["classifier.0.weight"].view(4096, 512, 7, 7)
    assert torch.equal(model.head.fc6.weight[5, 7], fc6[20, 7][[0, 3, 6]][:, [0, 3, 6]])
    assert torch.equal(model.head.fc6.bias, vgg16_sd["classifier.0.bias"][::4])
    assert torch.equal(model.head.fc7.weight[3, 9, 0, 0], vgg16_sd["classifier.3.weight"][12, 36])
    assert torch.equal(model.head.fc8.weight, fc8_before)  # new classes: untouched


def test_transplanted_fc6_is_vggs_fc6_restricted_to_the_kept_taps(vgg16_sd):
    """fc6 at one output = VGG16's Linear fc6 on a 7x7 window whose non-kept taps are zero."""
    model = transplant_vgg16(deeplab_v1(fov="largefov"), vgg16_sd)
    torch.manual_seed(2)
    pool5 = torch.randn(1, 512, 25, 25)
    with torch.no_grad():
        conv_out = model.head.fc6(pool5)[0, :, 12, 12]   # taps at 0, 12, 24 (rate 12)
        window = torch.zeros(512, 7, 7)
        window[:, ::3, ::3] = pool5[0][:, ::12, ::12]
        linear_out = F.linear(window.flatten(), vgg16_sd["classifier.0.weight"], vgg16_sd["classifier.0.bias"])
    torch.testing.assert_close(conv_out, linear_out[::4], rtol=1e-4, atol=1e-4)


def test_transplant_into_v2_fills_every_branch(vgg16_sd):
    model = transplant_vgg16(deeplab_v2(aspp="L"), vgg16_sd)
    w = model.aspp.branches[0].fc6.weight
    assert all(torch.equal(b.fc6.weight, w) for b in model.aspp.branches)
    assert torch.equal(model.features.conv3_2.weight, vgg16_sd["features.12.weight"])


def test_transplant_refuses_narrow_models_and_bad_state_dicts(vgg16_sd):
    with pytest.raises(ValueError, match="width=1.0"):
        transplant_vgg16(deeplab_v1(width=0.5), vgg16_sd)
    model = deeplab_v1(width=1.0)
    broken = dict(vgg16_sd)
    del broken["features.0.weight"]
    with pytest.raises(ValueError, match="missing features.0.weight"):
        transplant_vgg16(model, broken)
    wrong = dict(vgg16_sd, **{"classifier.3.weight": torch.zeros(1000, 4096)})
    with pytest.raises(ValueError, match="classifier.3.weight has shape"):
        transplant_vgg16(model, wrong)
    with pytest.raises(ValueError, match="vgg16_bn"):
        check_vgg16_state_dict({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.1.running_mean": torch.zeros(64)})
    with pytest.raises(ValueError, match="mapping"):
        transplant_vgg16(model, [1, 2])
    with pytest.raises(TypeError, match="deeplab_v1"):
        transplant_vgg16(torch.nn.Conv2d(3, 3, 1), vgg16_sd)


def test_imagenet_state_dict_from_cache_or_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="download=True"):
        imagenet_vgg16_state_dict(download=False)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({"features.0.bias": torch.arange(3.0)}, tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    assert torch.equal(imagenet_vgg16_state_dict()["features.0.bias"], torch.arange(3.0))


# ---------------------------------------------------------------- stride 8 vs exact dense

def _three_trunks(seed=0):
    torch.manual_seed(seed)
    dense = vgg16_features(TINY, "dense").eval()
    strided = vgg16_features(TINY, "stride32").eval()
    deeplab = vgg16_features(TINY, "largefov").eval()
    strided.load_state_dict(dense.state_dict())
    deeplab.load_state_dict(dense.state_dict())
    return dense, strided, deeplab


@pytest.mark.parametrize("size", [(64, 64), (75, 50)])
def test_dense_trunk_sampled_every_4th_equals_stride32(size):
    dense, strided, _ = _three_trunks()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        a, b = dense(x), strided(x)
    assert a.shape[-2:] == tuple(math.ceil(s / 8) for s in size)
    torch.testing.assert_close(a[..., ::4, ::4], b, rtol=1e-5, atol=1e-5)
    assert dense.pool5.dilation == (2, 2) and dense.pool4.stride == (1, 1)
    assert atrous_equivalence_error(strided, dense, x, 4) < 1e-4 * b.abs().max()


def test_deeplab_trunk_differs_from_dense_only_from_pool5():
    dense, strided, deeplab = _three_trunks()
    x = torch.randn(1, 3, 64, 64)
    cut = list(dict(deeplab.named_children())).index("relu5_3") + 1
    with torch.no_grad():
        torch.testing.assert_close(deeplab[:cut](x), dense[:cut](x))
        d_pool5 = deeplab[:cut + 1](x)
        gap = (d_pool5[..., ::4, ::4] - strided(x)).abs().max() / strided(x).abs().max()
    assert gap > 0.01


# ---------------------------------------------------------------- normalise / upsample / predict

def test_normalize_values_and_errors():
    img = torch.zeros(3, 2, 2, dtype=torch.uint8)
    img[0] = 255
    out = normalize(img)
    assert out[0, 0, 0].item() == pytest.approx((1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0])
    assert out[2, 1, 1].item() == pytest.approx(-IMAGENET_MEAN[2] / IMAGENET_STD[2])
    with pytest.raises(ValueError, match="uint8"):
        normalize(out)
    with pytest.raises(ValueError, match="shape"):
        normalize(torch.zeros(1, 4, 2, 2, dtype=torch.uint8))


def test_upsample_matches_align_corners_on_8k_plus_1():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 7)
    ref = F.interpolate(logits, size=(33, 49), mode="bilinear", align_corners=True)
    torch.testing.assert_close(upsample_logits(logits, (33, 49)), ref)


def test_upsample_puts_logit_j_on_pixel_8j():
    ramp = torch.arange(5.0).view(1, 1, 5, 1).expand(1, 1, 5, 4)   # logit row i = i
    up = upsample_logits(ramp, (40, 32))
    assert up.shape == (1, 1, 40, 32)
    rows = torch.arange(40.0).clamp(max=32) / 8                        # pixel y sits at y / 8
    torch.testing.assert_close(up[0, 0, :, 0], rows)


def test_predict_shapes_and_mode_restored():
    model = deeplab_v1(num_classes=3, width=TINY).train()
    images = torch.randint(0, 256, (2, 3, 50, 61), dtype=torch.uint8)
    labels = predict(model, images)
    assert labels.shape == (2, 50, 61) and labels.dtype == torch.int64 and model.training
    assert predict(model, images[0]).shape == (50, 61)
    assert int(labels.max()) < 3


def test_conv_macs_closed_form():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 1, stride=2))
    assert conv_macs(conv, (10, 12)) == {"0": 10 * 12 * 8 * 3 * 9, "1": 5 * 6 * 4 * 8}
    with torch.device("meta"):
        model = deeplab_v1(fov="largefov")
    macs = conv_macs(model, 321)
    positions = 41 * 41
    assert macs["head.fc6"] == positions * 1024 * 512 * 9
    assert macs["head.fc7"] + macs["head.fc8"] == positions * 1024 * (1024 + 21)
    assert macs["features.conv1_1"] == 321 * 321 * 64 * 27


def test_conv_macs_of_a_batchnorm_module_in_training_mode():
    from deeplab_lessons.models import ASPP
    aspp = ASPP(16, 8, (1, 2, 3)).train()
    macs = conv_macs(aspp, 5, in_channels=16)
    assert sum(macs.values()) == 25 * 8 * 16 * (1 + 27) + 1 * 8 * 16 + 25 * 8 * 40
    assert aspp.training


def test_denormalize_inverts_normalize():
    from deeplab_lessons.models import denormalize
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    assert torch.equal(denormalize(normalize(images)), images)


def test_small_field_control_sees_51_pixels_at_stride_8():
    from deeplab_lessons.models import build_model, small_field_vgg

    net = small_field_vgg(num_classes=21, width=0.25)
    rows = receptive_fields(net)
    # closed form by hand: conv1 (5) -> pool1 (7) -> conv2 (+2*2*2 = 15) -> pool2 (+4 = 19)
    # -> conv3 (+3*2*4 = 43) -> pool3 (+2*4 = 51); jump 8
    assert (rows[-1].size, rows[-1].jump) == (51, 8)
    assert net(torch.zeros(1, 3, 64, 96)).shape == (1, 21, 8, 12)
    assert [n for n, _ in net.named_children()][-2:] == ["pool3", "fc8"]
    assert list(net.classifier_parameters()) == list(net.fc8.parameters())
    assert build_model("small-field", width=0.25, norm="batch", init="auto")(torch.zeros(2, 3, 32, 32)).shape[1] == 21


def test_fc6_channels_override_and_looks_linear_start_of_an_even_fc6():
    from deeplab_lessons.models import build_model, register_model

    net = deeplab_v1(fov="4x4", width=0.25, fc6_channels=1024)
    assert (net.head.fc6.out_channels, net.head.fc7.out_channels) == (256, 256)
    assert net.head.fc6.kernel_size == (4, 4) and deeplab_v1(fov="4x4", width=0.25).head.fc6.out_channels == 1024
    with pytest.raises(ValueError, match="fc6_channels"):
        deeplab_v1(fc6_channels=0)
    register_model("test-4x4-1024", lambda **kw: deeplab_v1(fov="4x4", fc6_channels=1024, **kw))
    torch.manual_seed(0)
    model = build_model("test-4x4-1024", width=0.25, norm="batch", init="looks-linear")
    # odd kernels: only the centre tap is set; the even fc6 only its central 2x2 taps
    def weight(layer):                                   # norm="batch" puts each conv in a (conv, norm) pair
        return (layer[0] if isinstance(layer, torch.nn.Sequential) else layer).weight
    conv1 = weight(model.features.conv1_1)
    assert conv1[..., 0, 0].abs().max() == 0 and conv1[..., 1, 1].abs().max() > 0
    fc6 = weight(model.head.fc6)
    assert fc6[..., 0, :].abs().max() == 0 and fc6[..., 3, :].abs().max() == 0
    assert fc6[..., 1:3, 1:3].abs().amax((0, 1)).min() > 0
