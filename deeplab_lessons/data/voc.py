"""Reader for PASCAL VOC 2012 segmentation (real or the embedded synthetic set).

``ds[i] -> (image uint8 tensor [3, H, W], mask int64 tensor [H, W])`` with 255 = void/ignore.
Masks are palette PNGs: they are read as *indices* (``Image.open(p)`` in mode ``'P'``), never
converted to RGB — a classic bug in DeepLab ports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .palette import IGNORE_INDEX, VOC_CLASSES

SPLITS = ("train", "val", "trainval", "trainaug")


def _missing_voc_message(root: Path) -> str:
    return (f"no VOC 2012 at {root}: run `make data` for the embedded set, put PASCAL VOC 2012 there "
            f"(data/README.md says how), or pass download=True on a machine with internet")


class VOCSegmentation(torch.utils.data.Dataset):
    """PASCAL VOC 2012 semantic segmentation in the devkit layout.

    Args:
        root: the ``VOC2012`` folder (holding ``JPEGImages/``, ``SegmentationClass/`` and
            ``ImageSets/Segmentation/``) or a folder that holds ``VOCdevkit/VOC2012``.
        split: ``train``, ``val``, ``trainval`` or ``trainaug`` (SBD: ``SegmentationClassAug/``
            masks and ``ImageSets/Segmentation/train_aug.txt``).
        transforms: optional callable ``(image, mask) -> (image, mask)`` applied to the tensors.
    """

    def __init__(self, root: Path | str, split: str = "train",
                 transforms: Callable | None = None) -> None:
        root = Path(root)
        if (root / "VOCdevkit" / "VOC2012").is_dir():
            root = root / "VOCdevkit" / "VOC2012"
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not (root / "JPEGImages").is_dir():
            raise FileNotFoundError(_missing_voc_message(root))
        self.root = root
        self.split = split
        self.transforms = transforms
        self.num_classes = len(VOC_CLASSES)
        if split == "trainaug":
            split_file = root / "ImageSets" / "Segmentation" / "train_aug.txt"
            self.mask_dir = root / "SegmentationClassAug"
        else:
            split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
            self.mask_dir = root / "SegmentationClass"
        if not split_file.is_file():
            raise FileNotFoundError(f"split file {split_file} not found: {_missing_voc_message(root)}")
        self.ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise ValueError(f"split file {split_file} lists no images")

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[index]}.jpg"

    def mask_path(self, index: int) -> Path:
        return self.mask_dir / f"{self.ids[index]}.png"

    def load_image(self, index: int) -> np.ndarray:
        """RGB uint8 [H, W, 3]."""
        path = self.image_path(index)
        try:
            with Image.open(path) as img:
                return np.array(img.convert("RGB"))
        except FileNotFoundError:
            raise FileNotFoundError(f"image {path} listed in the {self.split} split is missing") from None
        except OSError as err:
            raise ValueError(f"image {path} is corrupt or truncated ({err})") from None

    def load_mask(self, index: int) -> np.ndarray:
        """Label indices uint8 [H, W] (255 = void)."""
        path = self.mask_path(index)
        try:
            with Image.open(path) as img:
                if img.mode not in ("P", "L"):
                    raise ValueError(f"mask {path} has mode {img.mode!r}; VOC masks are palette ('P') "
                                     f"or index ('L') PNGs")
                mask = np.array(img)
        except FileNotFoundError:
            raise FileNotFoundError(f"mask {path} listed in the {self.split} split is missing") from None
        except OSError as err:
            raise ValueError(f"mask {path} is corrupt or truncated ({err})") from None
        bad = np.unique(mask[(mask >= self.num_classes) & (mask != IGNORE_INDEX)])
        if bad.size:
            raise ValueError(f"mask {path} has labels {bad.tolist()} outside 0..{self.num_classes - 1} and 255")
        return mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.load_image(index)
        mask = self.load_mask(index)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"mask {self.mask_path(index)} is {mask.shape[1]}x{mask.shape[0]} but image "
                             f"{self.image_path(index)} is {image.shape[1]}x{image.shape[0]}")
        image_t = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).contiguous()
        mask_t = torch.from_numpy(mask.astype(np.int64))
        if self.transforms is not None:
            image_t, mask_t = self.transforms(image_t, mask_t)
        return image_t, mask_t
