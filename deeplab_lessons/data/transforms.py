"""Joint image + mask augmentation for segmentation training (DeepLab's recipe).

DeepLab v2 (arXiv 1606.00915, Sec. 4.1) and its released Caffe configs train on random crops
(321x321) of images randomly rescaled by 0.5-1.5 and mirrored left-right. Every geometric step
must move the image and its label map *together*, and the label map must be resampled with the
nearest neighbour (a bilinear mask invents labels between classes: halfway between "cat" (8) and
"background" (0) is "bus" (4)). Padding fills the image with the data mean (so the padded area
is zero after normalisation) and the mask with 255, so padded pixels are never trained on.

The tensors are wrapped as torchvision ``tv_tensors.Image`` / ``tv_tensors.Mask`` so that
``torchvision.transforms.v2`` picks the right interpolation and fill for each.

Every transform is a callable ``(image uint8 [3, H, W], mask int64 [H, W], generator=None) ->
(image, mask)`` that draws its random numbers from ``generator`` (a ``torch.Generator``; torch's
global one when None, so ``torch.manual_seed`` makes a run repeatable).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from deeplab_lessons.models.common import IMAGENET_MEAN

from .palette import IGNORE_INDEX

#: ImageNet RGB mean in uint8 units, (124, 116, 104): the value padded image pixels get (zero
#: after :func:`deeplab_lessons.models.common.normalize`).
IMAGE_MEAN_UINT8: tuple[int, int, int] = tuple(round(255 * m) for m in IMAGENET_MEAN)

JointTransform = Callable[..., "tuple[torch.Tensor, torch.Tensor]"]


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _wrap(image: torch.Tensor, mask: torch.Tensor) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    if image.ndim != 3 or mask.ndim != 2 or image.shape[-2:] != mask.shape:
        raise ValueError(f"expected image [3, H, W] and mask [H, W] of the same size, got image "
                         f"{tuple(image.shape)} and mask {tuple(mask.shape)}")
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def _unwrap(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class RandomScale:
    """Rescale image and mask by one factor drawn uniformly from ``scale_range``.

    The image is resampled bilinearly (antialiased when shrinking), the mask with the nearest
    neighbour, so every output label is one of the input labels.
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 1.5)) -> None:
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range}")
        self.scale_range = (lo, hi)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * _uniform(generator)
        height, width = mask.shape[-2:]
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        image, mask = _wrap(image, mask)
        image = F.resize(image, size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        mask = F.resize(mask, size, interpolation=v2.InterpolationMode.NEAREST)
        return _unwrap(image, mask)

    def __repr__(self) -> str:
        return f"RandomScale(scale_range={self.scale_range})"


class RandomCrop:
    """A ``crop_size`` x ``crop_size`` window at a random position.

    A side shorter than ``crop_size`` is first padded at the bottom/right (as DeepLab's Caffe
    data layer does) with ``mean`` (RGB, uint8 units) in the image and ``ignore_index`` in the mask.
    """

    def __init__(self, crop_size: int, mean: Sequence[int] = IMAGE_MEAN_UINT8,
                 ignore_index: int = IGNORE_INDEX) -> None:
        if int(crop_size) < 1:
            raise ValueError(f"crop_size must be a positive number of pixels, got {crop_size}")
        if len(mean) != 3:
            raise ValueError(f"mean must be 3 RGB values in uint8 units, got {mean}")
        self.crop_size = int(crop_size)
        self.mean = [int(round(float(m))) for m in mean]
        self.ignore_index = int(ignore_index)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = _wrap(image, mask)
        size = self.crop_size
        height, width = mask.shape
        pad_h, pad_w = max(0, size - height), max(0, size - width)
        if pad_h or pad_w:
            image = F.pad(image, [0, 0, pad_w, pad_h], fill=self.mean)
            mask = F.pad(mask, [0, 0, pad_w, pad_h], fill=self.ignore_index)
            height, width = height + pad_h, width + pad_w
        top = int(torch.randint(height - size + 1, (), generator=generator))
        left = int(torch.randint(width - size + 1, (), generator=generator))
        return _unwrap(F.crop(image, top, left, size, size), F.crop(mask, top, left, size, size))

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size})"


class RandomHorizontalFlip:
    """Mirror image and mask left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if _uniform(generator) < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply joint transforms one after the other."""

    def __init__(self, transforms: Sequence[JointTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        for transform in self.transforms:
            image, mask = transform(image, mask, generator)
        return image, mask

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def train_transforms(crop_size: int, scale_range: tuple[float, float] | None = (0.5, 1.5),
                     flip: bool = True, mean: Sequence[int] = IMAGE_MEAN_UINT8) -> Compose:
    """DeepLab's training augmentation: random scale, pad (mean / 255), random ``crop_size`` crop, flip.

    ``crop_size`` is in pixels (321 in the papers' configs; smaller for CPU lessons);
    ``scale_range=None`` skips the rescaling. Returns a :class:`Compose` of joint transforms.
    """
    steps: list[JointTransform] = []
    if scale_range is not None:
        steps.append(RandomScale(scale_range))
    steps.append(RandomCrop(crop_size, mean=mean))
    if flip:
        steps.append(RandomHorizontalFlip(0.5))
    return Compose(steps)
