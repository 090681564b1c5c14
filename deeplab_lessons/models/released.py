"""Released weights in the lessons' own models: torchvision's DeepLabV3 and timm's aligned Xception-65.

- :func:`from_torchvision`: torchvision's ``deeplabv3_resnet50`` / ``deeplabv3_resnet101`` (a model or
  its ``state_dict``) as this package's :class:`~.resnet.DeepLabV3` with the same weights. torchvision's
  network is the paper's at output stride 8 without multi-grid (``replace_stride_with_dilation=[False,
  True, True]``, ASPP rates 12, 24, 36), plus one layer the paper does not have: a 3x3 conv + BN + ReLU
  between the ASPP and the classifier (``head="torchvision"``). Its ``COCO_WITH_VOC_LABELS_V1`` weights
  score the 21 PASCAL VOC classes, so the lessons' v3 segments real photographs with them.
- :func:`from_timm_xception65`: timm's ``xception65`` as this package's :class:`~.xception.AlignedXception`
  in its ``"released"`` layout (timm's ``xception65.tf_in1k`` weights are the port of the released
  TensorFlow ImageNet checkpoint; its default weights are timm's own training, in the same layout).

Both copy tensor by tensor and check every name and shape; nothing here downloads anything (getting the
weights is torchvision's / timm's business: :func:`torchvision_voc_weights_cached` says whether they are
on this machine).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .resnet import RESNET_UNITS, DeepLabV3, deeplab_v3
from .xception import XCEPTION65_BLOCKS, AlignedXception


def _state_dict(model_or_state: nn.Module | dict, what: str) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state, nn.Module):
        return model_or_state.state_dict()
    if isinstance(model_or_state, dict):
        return model_or_state
    raise TypeError(f"{what}: give the model or its state_dict, got {type(model_or_state).__name__}")


def _copy(target: nn.Module, pairs: dict[str, torch.Tensor], what: str) -> None:
    """Load ``pairs`` (target name -> tensor) into ``target``, which must take every one of its tensors from it."""
    own = target.state_dict()
    missing = sorted(set(own) - set(pairs))
    extra = sorted(set(pairs) - set(own))
    if missing or extra:
        raise ValueError(f"{what}: the weights do not fit (missing {missing[:3]}, unexpected {extra[:3]})")
    wrong = [k for k in own if own[k].shape != pairs[k].shape]
    if wrong:
        k = wrong[0]
        raise ValueError(f"{what}: {k} has shape {tuple(pairs[k].shape)}, the model's {tuple(own[k].shape)}")
    target.load_state_dict({k: v.detach().clone() for k, v in pairs.items()})


def from_torchvision(tv_model: nn.Module | dict) -> DeepLabV3:
    """torchvision's ``deeplabv3_resnet50`` / ``deeplabv3_resnet101`` (model or state dict) as the lessons' v3.

    Returns a :class:`~.resnet.DeepLabV3` (``backbone`` read from the depth of ``layer3``, output stride 8,
    ``multi_grid=None``, ``head="torchvision"``, the classes of its classifier) with the same weights, in
    eval mode. Its logits, upsampled bilinearly (``align_corners=False``) to the input, equal torchvision's
    ``out``. The auxiliary FCN head (``aux_classifier``, a training aid) is dropped.
    """
    state = {k: v for k, v in _state_dict(tv_model, "from_torchvision").items() if not k.startswith("aux_classifier.")}
    if "classifier.4.weight" not in state or "backbone.conv1.weight" not in state:
        raise ValueError("from_torchvision: not a torchvision DeepLabV3 state dict (no backbone.conv1 / classifier.4); "
                         "build it with torchvision.models.segmentation.deeplabv3_resnet50(...)")
    units = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"backbone\.layer3\.(\d+)\.", k)))
    backbone = next((name for name, plan in RESNET_UNITS.items() if plan[2] == units), None)
    if backbone is None:
        raise ValueError(f"from_torchvision: a ResNet with {units} units in layer3 is neither resnet50 nor resnet101")
    num_classes = state["classifier.4.weight"].shape[0]
    model = deeplab_v3(num_classes=num_classes, backbone=backbone, output_stride=8, multi_grid=None, head="torchvision")
    pairs = {f"backbone.{k[len('backbone.'):]}": v for k, v in state.items() if k.startswith("backbone.")}
    tv_aspp = [k for k in state if k.startswith("classifier.0.")]
    our_aspp = [k for k in model.state_dict() if k.startswith("aspp.")]
    if len(tv_aspp) != len(our_aspp):
        raise ValueError(f"from_torchvision: torchvision's ASPP has {len(tv_aspp)} tensors, the lessons' {len(our_aspp)}")
    pairs.update({ours: state[theirs] for ours, theirs in zip(our_aspp, tv_aspp)})   # same order: 1x1, 3x3 x3, pool, project
    for theirs, ours in (("classifier.1.", "head.conv."), ("classifier.2.", "head.bn."), ("classifier.4.", "classifier.")):
        pairs.update({ours + k[len(theirs):]: v for k, v in state.items() if k.startswith(theirs)})
    _copy(model, pairs, "from_torchvision")
    return model.eval()


def timm_xception65_names() -> dict[str, str]:
    """timm ``xception65`` parameter/buffer prefixes -> the :class:`AlignedXception` module prefixes."""
    names = {"stem.0.conv.": "stem.conv1.", "stem.0.bn.": "stem.bn1.", "stem.1.conv.": "stem.conv2.",
             "stem.1.bn.": "stem.bn2."}
    parts = {"conv_dw.": "depthwise.", "bn_dw.": "depthwise_bn.", "conv_pw.": "pointwise.", "bn_pw.": "pointwise_bn."}
    for i, (flow, block, *_rest) in enumerate(XCEPTION65_BLOCKS):
        ours = f"{flow}_flow.{block}."
        names[f"blocks.{i}.shortcut.conv."] = ours + "shortcut.conv."
        names[f"blocks.{i}.shortcut.bn."] = ours + "shortcut.bn."
        for k in (1, 2, 3):
            for theirs_part, our_part in parts.items():
                names[f"blocks.{i}.stack.conv{k}.{theirs_part}"] = f"{ours}convs.sep{k}.{our_part}"
    return names


def from_timm_xception65(timm_model: nn.Module | dict, output_stride: int = 16) -> AlignedXception:
    """timm's ``xception65`` (model or state dict) as the lessons' Xception-65 in the released layout.

    Returns an :class:`~.xception.AlignedXception` (``layout="released"``, ``output_stride`` 16 or 8) with
    timm's weights, in eval mode, whose ``forward(x)["out"]`` equals timm's ``forward_features(x)`` for a
    timm model built with the same ``output_stride``. timm's ImageNet classifier (``head.*``) is dropped.
    """
    state = {k: v for k, v in _state_dict(timm_model, "from_timm_xception65").items() if not k.startswith("head.")}
    names = timm_xception65_names()
    pairs = {}
    for key, value in state.items():
        prefix = next((p for p in names if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"from_timm_xception65: {key} is not a tensor of timm's xception65")
        pairs[names[prefix] + key[len(prefix):]] = value
    model = AlignedXception(output_stride, layout="released")
    _copy(model, pairs, "from_timm_xception65")
    return model.eval()


def torchvision_voc_weights(backbone: str = "resnet50"):
    """torchvision's ``COCO_WITH_VOC_LABELS_V1`` weights enum for ``deeplabv3_<backbone>``."""
    from torchvision.models import segmentation as seg

    enums = {"resnet50": seg.DeepLabV3_ResNet50_Weights, "resnet101": seg.DeepLabV3_ResNet101_Weights}
    if backbone not in enums:
        raise ValueError(f"backbone must be one of {sorted(enums)}, got {backbone!r}")
    return enums[backbone].COCO_WITH_VOC_LABELS_V1


def torchvision_voc_weights_cached(backbone: str = "resnet50") -> bool:
    """True when torchvision's VOC-label DeepLabV3 weights are in torch's cache (no download needed)."""
    from .vgg import hub_checkpoint_path

    return hub_checkpoint_path(torchvision_voc_weights(backbone)).is_file()


def torchvision_v3_with_voc_weights(backbone: str = "resnet50", download: bool = False) -> DeepLabV3:
    """The lessons' v3 carrying torchvision's VOC-label weights (:func:`from_torchvision`).

    Uses torch's cache; downloads (about 160 / 240 MB) only with ``download=True``. Without the weights
    and without ``download`` raises ``FileNotFoundError`` saying how to get them.
    """
    from torchvision.models import segmentation as seg

    weights = torchvision_voc_weights(backbone)
    if not download and not torchvision_voc_weights_cached(backbone):
        raise FileNotFoundError(f"torchvision's {weights} are not in torch's cache: on a machine with internet call "
                                f"torchvision_v3_with_voc_weights({backbone!r}, download=True) once")
    builder = {"resnet50": seg.deeplabv3_resnet50, "resnet101": seg.deeplabv3_resnet101}[backbone]
    return from_torchvision(builder(weights=weights))
