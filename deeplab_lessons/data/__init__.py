"""Data: PASCAL VOC 2012 (real or the embedded synthetic set) and its palette."""

from .palette import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE, colorize
from .synthetic import ensure_embedded_voc, make_synthetic_voc, save_palette_png, synthesize_image
from .voc import VOCSegmentation

__all__ = [
    "IGNORE_INDEX", "VOC_CLASSES", "VOC_PALETTE", "colorize",
    "ensure_embedded_voc", "make_synthetic_voc", "save_palette_png", "synthesize_image",
    "VOCSegmentation",
]
