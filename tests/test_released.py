"""Released implementations in the lessons' models: torchvision's DeepLabV3 and timm's Xception-65 (random weights).

BatchNorm statistics and affine parameters are randomised first, so that a tensor copied into the wrong place,
a missing layer or a wrong epsilon shows in the outputs; nothing is downloaded.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from deeplab_lessons.models import deeplab_v3, deeplab_v3plus
from deeplab_lessons.models.released import from_timm_xception65, from_torchvision, timm_xception65_names
from deeplab_lessons.models.xception import AlignedXception


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


@pytest.mark.parametrize("builder, units", [("deeplabv3_resnet50", 6), ("deeplabv3_resnet101", 23)])
def test_from_torchvision_gives_torchvisions_output(builder, units):
    torch.manual_seed(0)
    tv = getattr(torchvision.models.segmentation, builder)(weights=None, weights_backbone=None, num_classes=21,
                                                          aux_loss=True)
    _randomise_norms(tv)
    ours = from_torchvision(tv)
    assert len(ours.backbone.layer3) == units and ours.output_stride == 8 and not ours.training
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for n, p in tv.named_parameters() if not n.startswith("aux_classifier"))
    x = torch.randn(1, 3, 67, 83)
    with torch.no_grad():
        ref = tv(x)["out"]
        logits = ours(x)
        mine = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    assert ref.abs().max() > 0.1                              # not a trivially zero output
    torch.testing.assert_close(mine, ref, rtol=0, atol=1e-4)
    # the state dict alone works too, and the paper's head (no extra 3x3 conv) is a different network
    again = from_torchvision(tv.state_dict())
    torch.testing.assert_close(again(x), logits, rtol=0, atol=0)
    with torch.no_grad():
        ours.head = nn.Identity()
        assert (ours(x) - logits).abs().max() > 1e-2          # without torchvision's extra layer: another network


def test_from_torchvision_refuses_what_it_cannot_convert():
    with pytest.raises(ValueError, match="not a torchvision DeepLabV3"):
        from_torchvision(torchvision.models.resnet18(weights=None))
    with pytest.raises(TypeError, match="give the model or its state_dict"):
        from_torchvision("weights.pth")
    tv = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=5)
    state = tv.state_dict()
    state["classifier.1.weight"] = state["classifier.1.weight"][:, :128]
    with pytest.raises(ValueError, match="head.conv.weight has shape"):
        from_torchvision(state)


def test_v3_heads():
    paper = deeplab_v3(num_classes=4, width=0.125)
    tv = deeplab_v3(num_classes=4, width=0.125, head="torchvision")
    ch = paper.classifier.in_channels
    assert sum(p.numel() for p in tv.parameters()) - sum(p.numel() for p in paper.parameters()) == ch * ch * 9 + 2 * ch
    with pytest.raises(ValueError, match="head must be one of"):
        deeplab_v3(width=0.125, head="fcn")


timm = pytest.importorskip("timm")


@pytest.mark.parametrize("output_stride", [16, 8])
def test_from_timm_xception65_gives_timms_features(output_stride):
    torch.manual_seed(0)
    ref_model = _randomise_norms(timm.create_model("xception65", pretrained=False, output_stride=output_stride))
    ours = from_timm_xception65(ref_model, output_stride=output_stride)
    assert ours.layout == "released" and not ours.training
    x = torch.randn(1, 3, 65, 81)
    with torch.no_grad():
        ref = ref_model.forward_features(x)
        mine = ours(x)["out"]
    assert mine.shape == ref.shape and ref.abs().max() > 0.1
    torch.testing.assert_close(mine, ref, rtol=0, atol=1e-4)
    # the paper's arrangement of the very same weights is a different function
    paper = AlignedXception(output_stride).eval()
    paper.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert (paper(x)["out"] - ref).abs().max() > 1e-2


def test_xception_layouts_share_every_parameter_name_and_timm_maps_one_to_one():
    paper, released = AlignedXception(16), AlignedXception(16, layout="released")
    assert [(k, v.shape) for k, v in paper.state_dict().items()] == \
        [(k, v.shape) for k, v in released.state_dict().items()]
    ref = timm.create_model("xception65", pretrained=False)
    timm_keys = [k for k in ref.state_dict() if not k.startswith("head.")]
    assert len(timm_keys) == len(released.state_dict()) == 792
    assert sum(p.numel() for p in released.parameters()) == sum(
        p.numel() for n, p in ref.named_parameters() if not n.startswith("head."))
    assert {m.eps for m in released.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    assert {m.eps for m in paper.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-5}
    assert len(timm_xception65_names()) == 4 + 21 * 2 + 21 * 3 * 4
    with pytest.raises(ValueError, match="layout must be one of"):
        AlignedXception(16, layout="tf")
    with pytest.raises(ValueError, match="applies to backbone='xception65' only"):
        deeplab_v3plus(width=0.125, layout="released")
    v3plus = deeplab_v3plus(backbone="xception65", width=0.125, layout="released")
    assert v3plus.backbone.layout == "released"
    with torch.no_grad():
        assert v3plus.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 21, 16, 16)


def test_released_weight_helpers_do_not_download(monkeypatch, tmp_path):
    from deeplab_lessons.models import released

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert not released.torchvision_voc_weights_cached("resnet50")
    with pytest.raises(FileNotFoundError, match="download=True"):
        released.torchvision_v3_with_voc_weights("resnet50")
    with pytest.raises(ValueError, match="backbone must be one of"):
        released.torchvision_voc_weights("resnet18")
