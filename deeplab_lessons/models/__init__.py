"""DeepLab models: v1 (VGG16 stride 8, DeepLab / LargeFOV), v2 (ASPP), v3 and v3+ (ResNet).

Conventions shared by every model built here:

- ``forward(x)`` takes an ImageNet-normalised float batch ``[N, 3, H, W]`` (:func:`normalize` of
  the ``uint8`` images) and returns logits at ``model.output_stride`` (8 for v1/v2); bring them to
  image size with :func:`upsample_logits` or get labels with :func:`predict`.
- ``model.classifier_parameters()`` yields the new class-scoring layer(s) (10x learning rate,
  v1 arXiv 1412.7062 Sec. 4.1; v1: ``head.fc8``, v2: the four ``aspp.branches[i].fc8``);
  ``model.backbone_parameters()`` yields all the others.
- ``width`` scales every channel count; ``width=1.0`` is the paper's network.
"""

from deeplab_lessons.models.aspp import ASPP, ASPPv2Head, aspp_rates, valid_tap_counts, valid_tap_fraction
from deeplab_lessons.models.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    conv_macs,
    denormalize,
    normalize,
    predict,
    upsample_logits,
)
from deeplab_lessons.models.vgg import (
    DeepLabV1,
    DeepLabV2,
    deeplab_v1,
    deeplab_v2,
    imagenet_vgg16_state_dict,
    transplant_vgg16,
    vgg16_features,
)
from deeplab_lessons.models.resnet import (
    DeepLabV3,
    DeepLabV3Plus,
    DeepLabV3PlusDecoder,
    DilatedResNet,
    deeplab_v3,
    deeplab_v3plus,
    imagenet_resnet_state_dict,
    transplant_resnet,
    unit_dilations,
)
