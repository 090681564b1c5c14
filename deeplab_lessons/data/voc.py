"""Reader for PASCAL VOC 2012 segmentation (real or the embedded synthetic set), and getting the data.

``ds[i] -> (image uint8 tensor [3, H, W], mask int64 tensor [H, W])`` with 255 = void/ignore.
Masks are palette PNGs: they are read as *indices* (``Image.open(p)`` in mode ``'P'``), never
converted to RGB — a classic bug in DeepLab ports. A mask saved as RGB by some other tool is
mapped back through the VOC palette (every colour must be a VOC class colour, else it is refused).

Getting the real data (a machine with internet; nothing here downloads unless asked):

- :func:`download_voc` (or ``VOCSegmentation(..., download=True)``): the VOC 2012 trainval tar
  (1.9 GB) through torchvision's downloader, MD5-checked, extracted to ``VOCdevkit/VOC2012``.
- :func:`prepare_trainaug`: the "trainaug" split of DeepLab (arXiv 1412.7062 Sec. 5 and 1606.00915
  Sec. 4.1): VOC 2012 train plus the extra annotations of the Semantic Boundaries Dataset (SBD,
  Hariharan et al. 2011), minus every VOC 2012 val image: 10,582 images. It writes
  ``SegmentationClassAug/<id>.png`` (index PNGs) and ``ImageSets/Segmentation/train_aug.txt``.

Bad data is reported with the file it is in: missing or corrupt/truncated JPEG, unreadable mask,
mask size different from the image, labels outside ``0..20`` other than 255, an empty split file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .palette import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE

SPLITS = ("train", "val", "trainval", "trainaug")

#: PASCAL VOC 2012 trainval archive: torchvision's own table entry (url, filename, md5, base_dir).
VOC2012_ARCHIVE: dict[str, str] = {
    "url": "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    "filename": "VOCtrainval_11-May-2012.tar",
    "md5": "6cd6e144f989b92b3379bac3b3de84fd",
}

#: Semantic Boundaries Dataset archive (torchvision's ``SBDataset``): ``benchmark_RELEASE/dataset/{img,cls,...}``.
SBD_ARCHIVE: dict[str, str] = {
    "url": "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
    "filename": "benchmark.tgz",
    "md5": "82b4d87ceb2ed10f6038a1cba92111cb",
}

#: Images in DeepLab's trainaug split built from the real VOC 2012 + SBD.
TRAINAUG_SIZE = 10582


def _voc_folder(root: Path | str) -> Path:
    """``root`` itself when it is a ``VOC2012`` folder, else ``root/VOCdevkit/VOC2012``."""
    root = Path(root).expanduser()
    if (root / "JPEGImages").is_dir() or root.name == "VOC2012":
        return root
    return root / "VOCdevkit" / "VOC2012"


def _fetch(archive: dict[str, str], folder: Path, url: str | None, md5: str | None) -> None:
    """Download ``archive`` into ``folder`` (MD5-checked by torchvision) and extract it there."""
    from torchvision.datasets.utils import download_and_extract_archive

    url = url or archive["url"]
    md5 = archive["md5"] if md5 is None else md5
    folder.mkdir(parents=True, exist_ok=True)
    try:
        download_and_extract_archive(url, str(folder), filename=archive["filename"], md5=md5 or None)
    except RuntimeError as err:  # torchvision: "File not found or corrupted."
        raise RuntimeError(f"download of {url} into {folder / archive['filename']} failed its MD5 check "
                           f"(expected {md5}): delete the file and retry ({err})") from None
    except OSError as err:
        raise OSError(f"could not download {url} ({err}); without internet, copy {archive['filename']} "
                      f"into {folder} and call again") from None


def download_voc(root: Path | str, url: str | None = None, md5: str | None = None) -> Path:
    """Download and extract PASCAL VOC 2012 trainval (1.9 GB) under ``root``; return ``root/VOCdevkit/VOC2012``.

    Uses torchvision's downloader (``download_and_extract_archive``) with the archive's MD5
    (:data:`VOC2012_ARCHIVE`); an archive already in ``root`` with the right checksum is not
    downloaded again. ``url``/``md5`` override the source (a mirror; ``md5=""`` skips the check).
    Raises ``RuntimeError`` on a checksum mismatch and ``OSError`` when the download fails.
    """
    root = Path(root).expanduser()
    _fetch(VOC2012_ARCHIVE, root, url, md5)
    voc = root / "VOCdevkit" / "VOC2012"
    if not (voc / "JPEGImages").is_dir():
        raise FileNotFoundError(f"the archive extracted into {root} holds no VOCdevkit/VOC2012/JPEGImages")
    return voc


def _read_ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _sbd_mask(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    try:
        mask = loadmat(str(path))["GTcls"][0]["Segmentation"][0]
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise ValueError(f"SBD annotation {path} is unreadable or lacks GTcls.Segmentation ({err})") from None
    return np.asarray(mask, dtype=np.uint8)


def prepare_trainaug(voc_root: Path | str, sbd_root: Path | str | None = None, download: bool = False,
                     url: str | None = None, md5: str | None = None) -> Path:
    """Build DeepLab's "trainaug" split from VOC 2012 and SBD; return the path of ``train_aug.txt``.

    Args:
        voc_root: the ``VOC2012`` folder (or one holding ``VOCdevkit/VOC2012``).
        sbd_root: SBD's ``dataset`` folder (holding ``cls/*.mat``, ``train.txt``, ``val.txt``);
            default ``<data dir>/benchmark_RELEASE/dataset`` next to ``VOCdevkit``.
        download: fetch SBD's ``benchmark.tgz`` (1.4 GB, MD5-checked) first when ``sbd_root`` is missing.
        url, md5: override the SBD source (a mirror).

    The split is (SBD train + SBD val + VOC train) minus VOC val, in sorted order (10,582 ids
    on the real data). Masks: SBD's ``GTcls.Segmentation`` where SBD has the image, else VOC's
    own ``SegmentationClass`` PNG; written as index PNGs in ``SegmentationClassAug/``.
    """
    voc = _voc_folder(voc_root)
    seg_sets = voc / "ImageSets" / "Segmentation"
    for name in ("train.txt", "val.txt"):
        if not (seg_sets / name).is_file():
            raise FileNotFoundError(f"{seg_sets / name} not found: {_missing_voc_message(voc)}")
    if sbd_root is None:
        sbd_root = voc.parent.parent / "benchmark_RELEASE" / "dataset"
    sbd = Path(sbd_root).expanduser()
    if not (sbd / "cls").is_dir():
        if not download:
            raise FileNotFoundError(f"no SBD annotations at {sbd / 'cls'}: pass download=True on a machine with "
                                    f"internet, or extract {SBD_ARCHIVE['filename']} ({SBD_ARCHIVE['url']}) there")
        _fetch(SBD_ARCHIVE, sbd.parent.parent, url, md5)
        if not (sbd / "cls").is_dir():
            raise FileNotFoundError(f"the SBD archive extracted into {sbd.parent.parent} holds no {sbd / 'cls'}")
    sbd_ids = set()
    for name in ("train.txt", "val.txt"):
        if (sbd / name).is_file():
            sbd_ids.update(_read_ids(sbd / name))
    if not sbd_ids:
        raise FileNotFoundError(f"no SBD split files (train.txt, val.txt) in {sbd}")
    voc_val = set(_read_ids(seg_sets / "val.txt"))
    ids = sorted((sbd_ids | set(_read_ids(seg_sets / "train.txt"))) - voc_val)
    out = voc / "SegmentationClassAug"
    out.mkdir(exist_ok=True)
    for image_id in ids:
        target = out / f"{image_id}.png"
        if target.exists():
            continue
        if image_id in sbd_ids:
            mask = _sbd_mask(sbd / "cls" / f"{image_id}.mat")
        else:
            mask = _read_index_mask(voc / "SegmentationClass" / f"{image_id}.png")
        tmp = target.with_suffix(".tmp.png")
        Image.fromarray(mask, mode="L").save(tmp)
        tmp.replace(target)
    split_file = seg_sets / "train_aug.txt"
    split_file.write_text("\n".join(ids) + "\n")
    return split_file


#: VOC colours of the labels a mask may hold (0..20 and 255), for masks saved as RGB.
_LABEL_COLOURS = {int(k): VOC_PALETTE[k] for k in list(range(len(VOC_CLASSES))) + [IGNORE_INDEX]}


def rgb_to_labels(rgb: np.ndarray, path: Path | str = "mask") -> np.ndarray:
    """Map an RGB-coded mask ``[H, W, 3]`` back to label indices ``[H, W]`` via the VOC palette.

    Raises ``ValueError`` naming ``path`` and the first foreign colours when a pixel is not a
    VOC class colour (e.g. a JPEG-compressed or anti-aliased mask, which cannot be recovered).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{path}: expected an RGB mask [H, W, 3], got shape {rgb.shape}")
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    labels = np.array(sorted(_LABEL_COLOURS))
    keys = np.array([(int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2]) for c in (_LABEL_COLOURS[k] for k in labels)])
    order = np.argsort(keys)
    keys, labels = keys[order], labels[order]
    pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
    known = keys[pos] == codes
    if not known.all():
        foreign = np.unique(rgb[~known].reshape(-1, 3), axis=0)[:5].tolist()
        raise ValueError(f"mask {path} is RGB and holds colours that are not VOC class colours, e.g. {foreign}: "
                         f"save masks as palette ('P') or index ('L') PNGs")
    return labels[pos].astype(np.uint8)


def _read_index_mask(path: Path) -> np.ndarray:
    """Label indices uint8 [H, W] from a palette/index PNG (or an RGB one via the palette)."""
    try:
        with Image.open(path) as img:
            if img.mode in ("P", "L"):
                return np.array(img)
            if img.mode in ("RGB", "RGBA"):
                return rgb_to_labels(np.array(img.convert("RGB")), path)
            raise ValueError(f"mask {path} has mode {img.mode!r}; VOC masks are palette ('P') or index ('L') PNGs")
    except FileNotFoundError:
        raise FileNotFoundError(f"mask {path} is missing") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"mask {path} is corrupt or truncated ({err})") from None


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
        download: when the folder is missing, download VOC 2012 there first (:func:`download_voc`,
            1.9 GB, MD5-checked; needs internet). The trainaug masks need :func:`prepare_trainaug`.
    """

    def __init__(self, root: Path | str, split: str = "train",
                 transforms: Callable | None = None, download: bool = False) -> None:
        root = _voc_folder(root)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not (root / "JPEGImages").is_dir() and download:
            download_voc(root.parent.parent)
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
            hint = ("build it with deeplab_lessons.data.prepare_trainaug(voc_root, download=True)"
                    if split == "trainaug" else _missing_voc_message(root))
            raise FileNotFoundError(f"split file {split_file} not found: {hint}")
        self.ids = _read_ids(split_file)
        if not self.ids:
            raise ValueError(f"split file {split_file} lists no images")

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        """``JPEGImages/<id>.jpg`` of sample ``index``."""
        return self.root / "JPEGImages" / f"{self.ids[index]}.jpg"

    def mask_path(self, index: int) -> Path:
        """The mask PNG of sample ``index`` (``SegmentationClass`` or, for trainaug, ``SegmentationClassAug``)."""
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
        """Label indices uint8 [H, W] (255 = void); RGB-coded masks are mapped through the VOC palette."""
        path = self.mask_path(index)
        try:
            mask = _read_index_mask(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"mask {path} listed in the {self.split} split is missing") from None
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


def image_batches(dataset, count: int, batch_size: int):
    """The first ``count`` samples of ``dataset`` as batches ``(images [B, 3, H, W] uint8, targets [B, H, W])``
    of up to ``batch_size`` consecutive images of one size (real VOC mixes sizes; the embedded set does not).

    Whole images, unpadded: what a batched evaluation or a batched CRF (lessons 06, 07) needs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images: list = []
    targets: list = []
    for index in range(min(count, len(dataset))):
        image, target = dataset[index]
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            yield torch.stack(images), torch.stack(targets)
            images, targets = [], []
        images.append(image)
        targets.append(target)
    if images:
        yield torch.stack(images), torch.stack(targets)
