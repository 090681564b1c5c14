"""Paths, device and thread choice, and the one place that sizes the lessons for the machine at hand.

Every notebook starts with::

    from deeplab_lessons import config
    device = config.device()                 # cuda if available, else cpu
    settings = config.lesson_settings()      # CPU-sized or GPU-sized defaults
    voc_root = config.voc_root()             # real VOC 2012 if present, else the embedded set

Environment variables override the defaults without editing a notebook:

- ``DEEPLAB_DATA``   folder that holds ``VOCdevkit/VOC2012`` (default: ``<repo>/data``)
- ``DEEPLAB_DEVICE`` ``cpu``, ``cuda``, ``cuda:1``, ... (default: ``cuda`` when available)
- ``DEEPLAB_SCALE``  ``cpu`` or ``gpu`` to force a lesson size (default: follows the device)
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["REPO_ROOT", "EMBEDDED_DEFAULT", "data_dir", "device", "is_real_voc", "voc_root", "LessonSettings",
           "CPU_SETTINGS", "GPU_SETTINGS", "lesson_settings", "in_test", "torch_threads"]

#: Root of the repository (the folder holding ``notebooks/`` and ``data/``).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Size of the embedded data set that ``make lab`` / ``make run`` generate: (n_train, n_val, (H, W)).
EMBEDDED_DEFAULT = {"n_train": 400, "n_val": 100, "size": (192, 256), "seed": 0}


def data_dir() -> Path:
    """Folder that holds ``VOCdevkit/VOC2012`` (``$DEEPLAB_DATA`` or ``<repo>/data``)."""
    env = os.environ.get("DEEPLAB_DATA")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


def device() -> torch.device:
    """``$DEEPLAB_DEVICE`` if set, else ``cuda`` when a GPU is visible, else ``cpu``."""
    env = os.environ.get("DEEPLAB_DEVICE")
    if env:
        dev = torch.device(env)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"DEEPLAB_DEVICE={env!r} but torch sees no CUDA device; unset it to use the CPU")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_real_voc(root: Path | str) -> bool:
    """True when ``root`` (a ``VOC2012`` folder) is PASCAL VOC itself rather than the embedded set."""
    return not (Path(root) / "SYNTHETIC").exists()


def voc_root(prefer_real: bool = True) -> Path:
    """The ``VOC2012`` folder the lessons read.

    Real PASCAL VOC 2012 under :func:`data_dir` wins when it is there (and ``prefer_real``);
    otherwise the embedded synthetic set (:data:`EMBEDDED_DEFAULT`) is generated once (about
    10 s) and returned. Beside a real VOC the embedded set lives in ``<data_dir>/embedded``.
    """
    from deeplab_lessons.data import ensure_embedded_voc

    real = data_dir() / "VOCdevkit" / "VOC2012"
    has_real = (real / "JPEGImages").is_dir() and is_real_voc(real)
    if has_real and prefer_real:
        return real
    return ensure_embedded_voc(data_dir() / "embedded" if has_real else data_dir(), **EMBEDDED_DEFAULT)


@dataclass(frozen=True)
class LessonSettings:
    """How big the lessons run. ``scale`` is ``"cpu"`` (minutes on 2 cores) or ``"gpu"`` (the papers)."""

    scale: str
    width: float          # channel multiplier of the VGG/ResNet trunks (1.0 = the paper's network)
    crop_size: int        # training crop, pixels
    batch_size: int
    iterations: int       # training iterations of lesson 05's default run
    eval_scales: tuple    # multi-scale inference scales
    num_workers: int

    def as_dict(self) -> dict:
        return asdict(self)


CPU_SETTINGS = LessonSettings(
    scale="cpu", width=0.25, crop_size=128, batch_size=8, iterations=2000,
    eval_scales=(0.75, 1.0, 1.25), num_workers=0,
)
GPU_SETTINGS = LessonSettings(
    scale="gpu", width=1.0, crop_size=321, batch_size=10, iterations=20000,
    eval_scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), num_workers=4,
)


def lesson_settings(dev: torch.device | str | None = None) -> LessonSettings:
    """CPU-sized settings on a CPU, the papers' settings on a GPU (``$DEEPLAB_SCALE`` forces one)."""
    forced = os.environ.get("DEEPLAB_SCALE")
    if forced:
        if forced not in ("cpu", "gpu"):
            raise ValueError(f"DEEPLAB_SCALE must be 'cpu' or 'gpu', got {forced!r}")
        return GPU_SETTINGS if forced == "gpu" else CPU_SETTINGS
    dev = torch.device(dev) if dev is not None else device()
    return GPU_SETTINGS if dev.type == "cuda" else CPU_SETTINGS


def in_test() -> bool:
    """True under ``make test`` (nbval / pytest): lessons may shorten long loops and hide progress bars."""
    return os.environ.get("DEEPLAB_TEST", "") not in ("", "0")


@contextmanager
def torch_threads(count: int | None):
    """Run the block with ``torch.set_num_threads(count)`` (``None``: leave it), then restore it.

    The CRF explorer uses one thread: a redraw is latency-bound, and on a busy 2-core machine
    two OpenMP threads stall each other at every operation's barrier.
    """
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
