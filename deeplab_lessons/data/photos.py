"""Real photographs that ship inside a package (scikit-image's sample images), for lessons 06 and 07.

Nothing is downloaded: scikit-image carries these files in its wheel. There is no ground truth for them;
the lessons report only what they measure on them (how many labels the CRF changes, what a released
network predicts), never a score against made-up labels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: The photographs used, with the VOC class of their subject (scikit-image's names).
PHOTOS = {"chelsea": "cat", "astronaut": "person"}


def load_photo(name: str) -> np.ndarray:
    """``H x W x 3`` uint8 RGB of scikit-image's sample photo ``name`` (one of :data:`PHOTOS`)."""
    if name not in PHOTOS:
        raise ValueError(f"photo must be one of {sorted(PHOTOS)}, got {name!r}")
    try:
        from skimage import data
    except ImportError:
        raise ImportError("the real photographs come with scikit-image: pip install scikit-image") from None
    image = np.asarray(getattr(data, name)())
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def ellipse_mask(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    """``[H, W]`` bool: the pixels inside the axis-aligned ellipse (``centre`` and ``radii`` as (row, column))."""
    if min(radii) <= 0:
        raise ValueError(f"radii must be positive, got {radii}")
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def stride_probs(mask: np.ndarray, label: int, num_classes: int = 21, stride: int = 8,
                 confidence: float = 0.8) -> torch.Tensor:
    """A network-like coarse prediction of ``mask`` as ``label``: ``[num_classes, H, W]`` probabilities.

    The mask is averaged over ``stride x stride`` blocks (what a stride-8 network can resolve) and
    upsampled bilinearly (``align_corners=False``), as DeepLab upsamples its logits; inside, ``label``
    gets ``confidence`` and background the rest, outside the reverse, with the block average in between.
    Every other class gets 1e-4 (then each pixel is normalised to sum to 1).
    """
    if not 0 < label < num_classes:
        raise ValueError(f"label must be in 1..{num_classes - 1}, got {label}")
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    height, width = m.shape[-2:]
    coarse = F.avg_pool2d(m, stride, stride, ceil_mode=True)
    share = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    fg = (1 - confidence) + (2 * confidence - 1) * share
    probs = torch.full((num_classes, height, width), 1e-4)
    probs[label], probs[0] = fg, 1 - fg
    return probs / probs.sum(0, keepdim=True)
