"""DeepLab as the papers and their released configs built it: label targets, MSC, schedules,
published recipes, output-stride switching, BatchNorm freezing, separable convolution, Xception-65."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision

from deeplab_lessons.data import make_synthetic_voc
from deeplab_lessons.models import (ASPP, MSC, XCEPTION65_BLOCKS, AlignedXception, DeepLabV3PlusDecoder,
                                    SeparableConv2d, build_model, conv_macs, deeplab_v1, deeplab_v3, deeplab_v3plus,
                                    published_label_target)
from deeplab_lessons.train import (PAPER_RECIPES, TrainConfig, config_from_args, main, segmentation_loss,
                                   shrink_labels, step_lr, train)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp("voc"), n_train=6, n_val=2, size=(41, 53), seed=4)


# --------------------------------------------------------------------------------------------
# Label targets


def test_shrink_labels_takes_the_pixel_under_each_logit():
    targets = torch.arange(17 * 19).reshape(1, 17, 19) % 21
    small = shrink_labels(targets, (3, 3), 8)
    assert small.tolist() == [[[targets[0, r, c].item() for c in (0, 8, 16)] for r in (0, 8, 16)]]
    # a grid reaching past the image repeats its last row and column
    assert shrink_labels(targets, (4, 4), 8)[0, 3, 3] == targets[0, 16, 18]


def test_both_label_targets_against_a_hand_computed_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 4)
    targets = torch.randint(0, 5, (2, 17, 25))
    targets[0, 0, 0] = 255                                      # a void pixel under a logit
    hand = F.cross_entropy(logits, targets[:, ::8, ::8], ignore_index=255)
    assert segmentation_loss(logits, targets, 8, "shrink") == pytest.approx(hand.item(), rel=1e-6)
    up = F.interpolate(logits, size=(17, 25), mode="bilinear", align_corners=True)
    hand_up = F.cross_entropy(up, targets, ignore_index=255)
    assert segmentation_loss(logits, targets, 8, "upsample") == pytest.approx(hand_up.item(), rel=1e-5)
    with pytest.raises(ValueError, match="label_target"):
        segmentation_loss(logits, targets, 8, "nearest")


def test_label_target_defaults_as_published():
    assert {m: published_label_target(m) for m in ("largefov", "deeplab-7x7", "aspp-l", "v3", "v3plus")} == {
        "largefov": "shrink", "deeplab-7x7": "shrink", "aspp-l": "shrink", "v3": "upsample", "v3plus": "upsample"}
    assert TrainConfig().label_target == "shrink"
    assert TrainConfig(model="v3").label_target == "upsample"
    assert TrainConfig(label_target="upsample").label_target == "upsample"
    assert config_from_args(["--label-target", "upsample"]).label_target == "upsample"
    with pytest.raises(ValueError, match="label_target must be one of"):
        TrainConfig(label_target="nearest")


# --------------------------------------------------------------------------------------------
# v2's MSC


def test_msc_fuses_the_scales_by_a_max_of_resized_logits():
    torch.manual_seed(0)
    net = deeplab_v1(num_classes=4, width=0.125).eval()
    msc = MSC(net).eval()
    x = torch.randn(1, 3, 49, 57)
    with torch.no_grad():
        base = net(x)
        maps = [base]
        for s in (0.75, 0.5):
            small = F.interpolate(x, size=(round(49 * s), round(57 * s)), mode="bilinear", align_corners=True)
            maps.append(F.interpolate(net(small), size=base.shape[-2:], mode="bilinear", align_corners=True))
        expected = torch.maximum(torch.maximum(maps[0], maps[1]), maps[2])
        torch.testing.assert_close(msc(x), expected)
    msc.train()
    out = msc(x)
    assert set(out) == {"out", "scales"} and len(out["scales"]) == 3
    assert msc.output_stride == 8 and list(msc.classifier_parameters()) == list(net.classifier_parameters())
    for bad in ((), (0.75, 1.0), (1.0, -0.5), "abc"):
        with pytest.raises(ValueError):
            MSC(net, bad)


def test_msc_trains_through_the_engine_and_reloads(voc, tmp_path):
    cfg = TrainConfig(model="largefov", width=0.125, crop_size=40, batch_size=2, iterations=2, progress=False,
                      msc_scales=(1.0, 0.75, 0.5), data=str(voc), out=str(tmp_path / "msc"), log_every=1)
    result = train(cfg)
    assert isinstance(result.model, MSC) and len(result.history["loss"]) == 2
    from deeplab_lessons.train import load_model
    again = load_model(tmp_path / "msc" / "model.pt", "cpu")
    assert isinstance(again, MSC) and again.scales == (1.0, 0.75, 0.5)


# --------------------------------------------------------------------------------------------
# Schedules and published recipes


def test_step_schedule_closed_form():
    assert [step_lr(1e-3, t, 6000, 2000) for t in (0, 1999, 2000, 4000, 5999)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-5, 1e-5])
    cfg = TrainConfig(lr_policy="step", lr=1e-3, iterations=6000, lr_step=2000)
    assert cfg.lr_at(4500) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="lr_policy"):
        TrainConfig(lr_policy="cosine")


def test_each_model_gets_its_papers_recipe():
    v1 = TrainConfig.paper("deeplab-4x4")
    assert (v1.crop_size, v1.batch_size, v1.iterations, v1.lr_policy, v1.lr_step, v1.label_target) == (
        306, 20, 6000, "step", 2000, "shrink")
    largefov = TrainConfig.paper("largefov")
    assert (largefov.crop_size, largefov.lr_policy) == (321, "step")
    v2 = TrainConfig.paper("aspp-l")
    assert (v2.crop_size, v2.batch_size, v2.iterations, v2.lr_policy, v2.lr) == (321, 10, 20000, "poly", 1e-3)
    v3 = TrainConfig.paper("v3")
    assert (v3.crop_size, v3.batch_size, v3.lr, v3.iterations, v3.output_stride, v3.eval_output_stride,
            v3.label_target, v3.scale_max, v3.eval_flip) == (513, 16, 0.007, 30000, 16, 8, "upsample", 2.0, True)
    assert all(c.width == 1.0 and c.pretrained and c.norm == "none" for c in (v1, v2, v3))
    assert not TrainConfig.paper("v3plus-xception").pretrained          # no ImageNet Xception in torchvision
    assert PAPER_RECIPES["v3plus"] == PAPER_RECIPES["v3"]
    assert TrainConfig.paper("v3plus-xception").weight_decay == 4e-5 and TrainConfig.paper("v3plus").weight_decay == 1e-4
    with pytest.raises(ValueError, match="no published recipe"):
        TrainConfig.paper("nope")


def test_cli_dry_run_prints_the_resolved_config_and_trains_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "deeplab_lessons.train", "--paper", "--model", "v3", "--dry-run",
                          "--out", str(tmp_path / "never")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert (shown["model"], shown["crop_size"], shown["batch_size"], shown["lr"], shown["output_stride"],
            shown["eval_output_stride"], shown["label_target"]) == ("v3", 513, 16, 0.007, 16, 8, "upsample")
    assert not (tmp_path / "never").exists()


def test_cli_reports_bad_settings_without_a_traceback(capsys):
    assert main(["--label-target", "nearest", "--dry-run"]) == 2
    assert "label_target must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):               # no abbreviations: "--dry" must not start a run
        main(["--dry"])


# --------------------------------------------------------------------------------------------
# Output stride: train at 16, evaluate at 8


@pytest.mark.parametrize("builder,kwargs", [(deeplab_v3, {}), (deeplab_v3plus, {}),
                                            (deeplab_v3plus, {"backbone": "xception65"})])
def test_switching_output_stride_equals_building_at_it(builder, kwargs):
    torch.manual_seed(0)
    at16 = builder(num_classes=3, width=0.125, output_stride=16, **kwargs).eval()
    at8 = builder(num_classes=3, width=0.125, output_stride=8, **kwargs).eval()
    at8.load_state_dict(at16.state_dict())
    x = torch.randn(1, 3, 67, 75)
    with torch.no_grad():
        before = at16(x)
        at16.set_output_stride(8)
        torch.testing.assert_close(at16(x), at8(x))
        at16.set_output_stride(16)
        torch.testing.assert_close(at16(x), before)
    assert at16.aspp.atrous_rates == (6, 12, 18)


def test_training_evaluates_at_the_evaluation_output_stride(voc, monkeypatch):
    seen = []
    from deeplab_lessons.train import engine

    real = engine.evaluate

    def spy(model, *args, **kwargs):
        seen.append(model.output_stride)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", spy)
    cfg = TrainConfig(model="v3", width=0.125, crop_size=48, batch_size=2, iterations=1, progress=False,
                      data=str(voc), output_stride=16, eval_output_stride=8)
    result = train(cfg)
    assert seen == [8] and result.model.output_stride == 16
    seen.clear()                                 # a model trained at 8 goes back to 8, not to the default 16
    result = train(TrainConfig(model="v3", width=0.125, crop_size=48, batch_size=2, iterations=1, progress=False,
                               data=str(voc), output_stride=8, eval_output_stride=16))
    assert seen == [16] and result.model.output_stride == 8
    with pytest.raises(ValueError, match="fixed output stride of 8"):
        TrainConfig(model="largefov", eval_output_stride=8)
    with pytest.raises(ValueError, match="cannot change its output stride"):
        MSC(deeplab_v1(width=0.125)).set_output_stride(8)


# --------------------------------------------------------------------------------------------
# BatchNorm: only the pretrained backbone's is frozen


def test_new_layers_batchnorm_trains_while_the_pretrained_backbones_stays(voc, monkeypatch):
    from deeplab_lessons.models import resnet

    fake = torchvision.models.resnet50(weights=None).state_dict()        # stands in for ImageNet's
    monkeypatch.setattr(resnet, "imagenet_resnet_state_dict", lambda backbone: fake)
    cfg = TrainConfig(model="v3plus", width=1.0, pretrained=True, norm="none", crop_size=48, batch_size=2,
                      iterations=2, progress=False, data=str(voc), optimizer="sgd", lr=1e-3)
    torch.manual_seed(0)
    start = cfg.build()
    result = train(cfg)
    after = result.model.state_dict()
    before = start.state_dict()
    backbone_stats = [k for k in before if k.startswith("backbone.") and k.endswith("running_mean")]
    head_stats = [k for k in before if k.startswith(("aspp.", "decoder.")) and k.endswith("running_mean")]
    assert backbone_stats and head_stats
    assert all(torch.equal(before[k], after[k]) for k in backbone_stats)
    assert all(not torch.equal(before[k], after[k]) for k in head_stats)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone.") and k.endswith("bn1.weight"))


# --------------------------------------------------------------------------------------------
# Atrous separable convolution and the aligned Xception


def _sep_params(cin: int, cout: int) -> int:
    return 9 * cin + 2 * cin + cin * cout + 2 * cout          # depthwise, its BN, pointwise, its BN


def test_xception65_parameter_count_closed_form():
    """Count from the layout table of v3+ Fig. 4 with the formula for a separable conv."""
    total = 3 * 9 * 32 + 2 * 32 + 32 * 9 * 64 + 2 * 64                   # the two stem convs + BN
    previous = 64
    for _, _, channels, _, shortcut in XCEPTION65_BLOCKS:
        cin = previous
        for c in channels:
            total += _sep_params(cin, c)
            cin = c
        if shortcut == "conv":
            total += previous * channels[-1] + 2 * channels[-1]
        previous = channels[-1]
    assert sum(1 for b in XCEPTION65_BLOCKS if b[0] == "middle") == 16
    assert sum(p.numel() for p in AlignedXception().parameters()) == total


def test_xception_strides_low_level_features_and_bad_widths():
    net = AlignedXception(output_stride=16, width=0.125).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 96))
    assert out["low_level"].shape[-2:] == (16, 24) and out["low_level"].shape[1] == net.low_level_channels == 32
    assert out["out"].shape[-2:] == (4, 6) and out["out"].shape[1] == net.out_channels == 256
    with pytest.raises(ValueError, match="rounds entry flow conv1 .* to 0 channels"):
        AlignedXception(width=0.01)
    with pytest.raises(ValueError, match="output_stride"):
        AlignedXception(output_stride=32)
    with pytest.raises(ValueError, match="no ImageNet Xception"):
        deeplab_v3plus(backbone="xception65", pretrained_backbone=True)
    with pytest.raises(ValueError, match="backbone must be one of"):
        deeplab_v3plus(backbone="mobilenet")


def test_separable_conv_equals_depthwise_then_pointwise():
    torch.manual_seed(0)
    sep = SeparableConv2d(6, 5, rate=2).eval()
    x = torch.randn(1, 6, 11, 13)
    with torch.no_grad():
        d = F.conv2d(x, sep.depthwise.weight, padding=2, dilation=2, groups=6)
        d = F.relu(sep.depthwise_bn(d))
        p = F.relu(sep.pointwise_bn(F.conv2d(d, sep.pointwise.weight)))
        torch.testing.assert_close(sep(x), p)


def test_separable_aspp_and_decoder_cost_less():
    """Multiply-adds of ASPP + decoder, regular vs atrous separable 3x3 convs, on one input size."""
    def head_macs(separable: bool) -> int:
        model = deeplab_v3plus(backbone="xception65", separable=separable)
        macs = conv_macs(model, 513)
        return sum(v for k, v in macs.items() if k.startswith(("aspp.", "decoder.")))

    regular, separable = head_macs(False), head_macs(True)
    assert separable < 0.5 * regular
    assert isinstance(deeplab_v3plus(backbone="xception65").aspp.branches[1], SeparableConv2d)
    assert not isinstance(deeplab_v3plus().aspp.branches[1], SeparableConv2d)
    assert isinstance(ASPP(8, 4, separable=True).branches[2], SeparableConv2d)
    assert isinstance(DeepLabV3PlusDecoder(8, 4, 2, 4, separable=True).fuse[0], SeparableConv2d)


def test_v3plus_xception_is_registered_and_trains(voc):
    model = build_model("v3plus-xception", width=0.125)
    assert model.backbone.name == "xception65" and model.output_stride == 4
    cfg = TrainConfig(model="v3plus-xception", width=0.125, crop_size=48, batch_size=2, iterations=1,
                      progress=False, data=str(voc))
    assert train(cfg).iteration == 1
