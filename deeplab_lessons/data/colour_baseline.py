"""The colour-only baseline: label each pixel by its colour alone, nothing else.

A lookup table from quantised RGB to the class most often seen with that colour in the training
set (:class:`ColourLookup`). On a data set where colour carries the class it is a perfect
segmenter; on the embedded set (and on PASCAL VOC) it is not, which is why DeepLab needs context.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .palette import IGNORE_INDEX

class ColourLookup:
    """Per-pixel colour classifier: RGB quantised to ``bins`` levels per channel -> majority class.

    ``fit`` counts (colour bin, class) pairs over labelled pixels (void ignored); ``predict``
    returns the most frequent class of each pixel's bin (background for colours never seen).
    """

    def __init__(self, num_classes: int = 21, bins: int = 16) -> None:
        if not 2 <= bins <= 256:
            raise ValueError(f"bins must be in 2..256, got {bins}")
        self.num_classes, self.bins = int(num_classes), int(bins)
        self.counts = np.zeros((bins ** 3, self.num_classes), dtype=np.int64)

    def _codes(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        q = image.astype(np.int64) * self.bins // 256
        return (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]

    def fit(self, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> "ColourLookup":
        """Count colours per class over ``(image uint8 [H, W, 3], labels [H, W])`` pairs."""
        for image, labels in pairs:
            codes, labels = self._codes(image), np.asarray(labels)
            if labels.shape != codes.shape:
                raise ValueError(f"labels {labels.shape} do not match image {codes.shape}")
            keep = (labels != IGNORE_INDEX) & (labels < self.num_classes)
            flat = codes[keep] * self.num_classes + labels[keep].astype(np.int64)
            self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class map [H, W] (int64): the majority class of each pixel's colour bin."""
        return self.counts.argmax(1)[self._codes(image)]
