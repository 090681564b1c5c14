"""Data: PASCAL VOC 2012 (real or the embedded synthetic set), its palette, augmentation and sampling, and real
sample photographs shipped with scikit-image (:mod:`.photos`)."""

from .colour_baseline import ColourLookup
from .palette import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE, colorize
from .photos import PHOTOS, ellipse_mask, load_photo, stride_probs
from .sampling import AugmentedSamples, SampleStream, sample_seed
from .synthetic import (BADGE_COLOURS, IMAGE_CUE_PAIR, ensure_embedded_voc, make_synthetic_voc, save_palette_png,
                        synthesize_image, synthesize_scene)
from .transforms import IMAGE_MEAN_UINT8, Compose, RandomCrop, RandomHorizontalFlip, RandomScale, train_transforms
from .voc import VOCSegmentation, download_voc, image_batches, prepare_trainaug, rgb_to_labels

__all__ = [
    "ColourLookup",
    "IGNORE_INDEX", "VOC_CLASSES", "VOC_PALETTE", "colorize",
    "PHOTOS", "ellipse_mask", "load_photo", "stride_probs",
    "AugmentedSamples", "SampleStream", "sample_seed",
    "BADGE_COLOURS", "IMAGE_CUE_PAIR", "ensure_embedded_voc", "make_synthetic_voc", "save_palette_png",
    "synthesize_image", "synthesize_scene",
    "VOCSegmentation", "download_voc", "image_batches", "prepare_trainaug", "rgb_to_labels",
    "IMAGE_MEAN_UINT8", "Compose", "RandomCrop", "RandomHorizontalFlip", "RandomScale", "train_transforms",
]
