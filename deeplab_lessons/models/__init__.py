"""DeepLab models: v1 (VGG16 stride 8, DeepLab / LargeFOV), v2 (ASPP), v3 and v3+ (ResNet).

Where each thing lives (import every name from here, ``from deeplab_lessons.models import ...``):

- :mod:`.common`: input normalisation, logits -> image size, convolution cost, and the helpers
  every builder shares (width multiplier, weight init, the classifier's parameters);
- :mod:`.aspp`: v2's ASPP head and v3's ASPP with image pooling; :mod:`.vgg`: v1 (both released
  trunks) and v2 on VGG16, ImageNet weight surgery; :mod:`.resnet`: v3 and v3+ on a dilated
  ResNet or :mod:`.xception` (v3+'s aligned Xception-65); :mod:`.separable`: atrous separable
  convolution; :mod:`.msc`: v2's multi-scale inputs with max fusion;
- :mod:`.init`: starts for training from scratch; :mod:`.norm`: BatchNorm / GroupNorm added,
  swapped or frozen;
- :mod:`.registry`: models by name (:func:`build_model`), what the trainer builds;
- :mod:`.released`: released weights in these models (torchvision's DeepLabV3, timm's Xception-65).

Conventions shared by every model built here:

- ``forward(x)`` takes an ImageNet-normalised float batch ``[N, 3, H, W]`` (:func:`normalize` of
  the ``uint8`` images) and returns logits at ``model.output_stride`` (8 for v1/v2); bring them to
  image size with :func:`upsample_logits`, or use :mod:`deeplab_lessons.inference` for labels
  and probabilities.
- ``model.classifier_parameters()`` yields the new class-scoring layer(s) (10x learning rate,
  v1 arXiv 1412.7062 Sec. 5; v1: ``head.fc8``, v2: the four ``aspp.branches[i].fc8``);
  ``model.backbone_parameters()`` yields all the others.
- ``width`` scales every channel count; ``width=1.0`` is the paper's network.
"""

from .aspp import (ASPP, V2_RATES, ASPPv2Head, ImagePooling, aspp_rates, off_centre_tap_share, valid_tap_counts,
                   valid_tap_fraction)
from .common import (IMAGENET_MEAN, IMAGENET_STD, MAX_WIDTH, check_num_classes, check_width, classifier_parameters,
                     conv_macs, denormalize, init_weights, normalize, scaled_channels, split_parameters,
                     upsample_logits)
from .init import looks_linear_, zero_residual_
from .norm import NORMS, freeze_batchnorm, group_norm, set_norm
from .msc import MSC, MSC_SCALES, check_scales, unwrap_msc
from .registry import (BUILDERS, INITS, LABEL_TARGETS, MODEL_FAMILY, MODEL_SPECS, available_models, build_model,
                       imagenet_weights_cached, imagenet_weights_file, load_pretrained, pretrained_backbone,
                       published_label_target, register_model, resolve_init)
from .released import (from_timm_xception65, from_torchvision, torchvision_v3_with_voc_weights,
                       torchvision_voc_weights_cached)
from .resnet import (RESNET_UNITS, V3_BACKBONES, V3_HEADS, DeepLabV3, DeepLabV3Plus, DeepLabV3PlusDecoder, DilatedResNet,
                     deeplab_v3, deeplab_v3plus, imagenet_resnet_state_dict, layer_plan, transplant_resnet,
                     unit_dilations)
from .separable import SeparableConv2d
from .vgg import (FC6_VARIANTS, TORCHVISION_CONV_INDEX, TRUNK_MODES, V1_TRUNKS, VGG16_BLOCKS, DeepLabV1, DeepLabV2,
                  SmallFieldVGG, check_vgg16_state_dict, decimation_indices, deeplab_v1, deeplab_v2, imagenet_vgg16_state_dict,
                  small_field_vgg, transplant_vgg16, vgg16_features)
from .xception import (XCEPTION65_BLOCKS, XCEPTION_LAYOUTS, XCEPTION_OUTPUT_STRIDES, AlignedXception, XceptionBlock, block_plan,
                       xception_channels)

__all__ = [
    "ASPP", "V2_RATES", "ASPPv2Head", "ImagePooling", "aspp_rates", "off_centre_tap_share", "valid_tap_counts",
    "valid_tap_fraction",
    "IMAGENET_MEAN", "IMAGENET_STD", "MAX_WIDTH", "check_num_classes", "check_width", "classifier_parameters",
    "conv_macs", "denormalize", "init_weights", "normalize", "scaled_channels", "split_parameters", "upsample_logits",
    "looks_linear_", "zero_residual_",
    "NORMS", "freeze_batchnorm", "group_norm", "set_norm",
    "MSC", "MSC_SCALES", "check_scales", "unwrap_msc",
    "BUILDERS", "INITS", "LABEL_TARGETS", "MODEL_FAMILY", "MODEL_SPECS", "available_models", "build_model",
    "imagenet_weights_cached", "imagenet_weights_file", "load_pretrained", "pretrained_backbone",
    "published_label_target", "register_model", "resolve_init",
    "from_timm_xception65", "from_torchvision", "torchvision_v3_with_voc_weights", "torchvision_voc_weights_cached",
    "RESNET_UNITS", "V3_BACKBONES", "V3_HEADS", "DeepLabV3", "DeepLabV3Plus", "DeepLabV3PlusDecoder", "DilatedResNet",
    "deeplab_v3", "deeplab_v3plus", "imagenet_resnet_state_dict", "layer_plan", "transplant_resnet", "unit_dilations",
    "SeparableConv2d",
    "FC6_VARIANTS", "TORCHVISION_CONV_INDEX", "TRUNK_MODES", "V1_TRUNKS", "VGG16_BLOCKS", "DeepLabV1", "DeepLabV2",
    "SmallFieldVGG", "check_vgg16_state_dict", "decimation_indices", "deeplab_v1", "deeplab_v2",
    "imagenet_vgg16_state_dict", "small_field_vgg", "transplant_vgg16", "vgg16_features",
    "XCEPTION65_BLOCKS", "XCEPTION_LAYOUTS", "XCEPTION_OUTPUT_STRIDES", "AlignedXception", "XceptionBlock", "block_plan",
    "xception_channels",
]
