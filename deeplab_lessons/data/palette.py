"""PASCAL VOC 2012 class names and colour palette (the palette PNGs' colour table)."""

from __future__ import annotations

import numpy as np

#: The 21 VOC 2012 classes; index 0 is background. Label 255 is "void" (boundaries, difficult).
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

#: Label that is never trained on and never scored.
IGNORE_INDEX = 255


def _voc_palette() -> np.ndarray:
    """The 256-entry colour map of the VOC devkit (``labelcolormap.m``): bits of the index spread over RGB."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[index] = (r, g, b)
    return palette


#: uint8 array [256, 3]: VOC_PALETTE[k] is the RGB colour of label k (255 -> (224, 224, 192)).
VOC_PALETTE: np.ndarray = _voc_palette()
VOC_PALETTE.setflags(write=False)


def colorize(mask) -> np.ndarray:
    """Label map [H, W] (numpy or torch, 255 = void) -> RGB uint8 [H, W, 3] in VOC colours."""
    mask = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask)
    return VOC_PALETTE[mask.astype(np.int64) % 256]
