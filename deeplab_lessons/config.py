"""Paths, device and thread choice, and the one place that sizes the lessons for the machine at hand.

Every notebook starts with::

    from deeplab_lessons import config
    device = config.device()                 # cuda if available, else cpu
    settings = config.lesson_settings()      # the profile: smoke, cpu, gpu or paper
    voc_root = config.voc_root()             # real VOC 2012 if present, else the embedded set

Environment variables override the defaults without editing a notebook:

- ``DEEPLAB_DATA``   folder that holds ``VOCdevkit/VOC2012`` (default: ``<repo>/data``)
- ``DEEPLAB_DEVICE`` ``cpu``, ``cuda``, ``cuda:1``, ... (default: ``cuda`` when available)
- ``DEEPLAB_PROFILE`` ``smoke``, ``cpu``, ``gpu`` or ``paper`` (default: ``gpu`` on a GPU, else ``cpu``;
  ``paper`` only when asked)
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

__all__ = ["REPO_ROOT", "EMBEDDED_DEFAULT", "data_dir", "device", "is_real_voc", "voc_root", "LessonSettings",
           "SMOKE_SETTINGS", "CPU_SETTINGS", "GPU_SETTINGS", "PAPER_SETTINGS", "PROFILES", "LESSON_MINUTES",
           "profile_name", "lesson_settings", "budget_note", "in_test", "torch_threads"]

#: Root of the repository (the folder holding ``notebooks/`` and ``data/``).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Size of the embedded data set that ``make lab`` / ``make run`` generate: (n_train, n_val, (H, W)).
EMBEDDED_DEFAULT = {"n_train": 400, "n_val": 100, "size": (192, 256), "seed": 0}


def data_dir() -> Path:
    """Folder that holds ``VOCdevkit/VOC2012`` (``$DEEPLAB_DATA`` or ``<repo>/data``)."""
    env = os.environ.get("DEEPLAB_DATA")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


def parse_device(name: str, what: str = "device") -> torch.device:
    """``name`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) as a ``torch.device`` that exists on this machine.

    Anything else is a ``ValueError`` that names ``what`` (the argument or variable it came from)
    and what is allowed, instead of torch's parser error.
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string such as 'cpu', 'cuda' or 'cuda:1', got {name!r}")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{what}={name!r} is not a device: use cpu, cuda, cuda:N (N a GPU index) or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{what}={name!r}: use cpu, cuda, cuda:N (N a GPU index) or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what}={name!r} but torch sees no CUDA device here; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{what}={name!r} but this machine has {torch.cuda.device_count()} GPU(s) "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{what}={name!r} but torch sees no Apple GPU (mps) here; use cpu")
    return dev


def device() -> torch.device:
    """``$DEEPLAB_DEVICE`` if set (checked by :func:`parse_device`), else ``cuda`` when a GPU is visible, else ``cpu``."""
    env = os.environ.get("DEEPLAB_DEVICE")
    if env:
        return parse_device(env, "DEEPLAB_DEVICE")
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
    """How big the lessons run: one profile of :data:`PROFILES` (see :func:`lesson_settings`).

    ``profile`` names the code path a lesson takes (``smoke``, ``cpu``, ``gpu`` or ``paper``);
    ``quick`` is True at the smoke sizes (tests, or ``DEEPLAB_PROFILE=smoke``): lessons then score
    a few images and train a few steps. The rest sizes lesson 05's run (and the other lessons'
    live runs): the trunks' channel multiplier ``width`` (1.0 = the papers' networks), the training
    ``crop_size`` (pixels), ``batch_size``, ``iterations`` of the whole run, of which
    ``live_iterations`` are trained in front of the learner, ``eval_every`` (iterations between
    evaluations), ``eval_scales`` (multi-scale inference), DataLoader ``num_workers``, mixed
    precision ``amp``, ``channels_last`` memory format and ``pretrained`` (ImageNet weights).
    """

    profile: str
    width: float
    crop_size: int
    batch_size: int
    iterations: int
    live_iterations: int
    eval_every: int
    eval_scales: tuple
    num_workers: int
    amp: bool = False
    channels_last: bool = False
    pretrained: bool = False
    quick: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def scale(self) -> str:
        """Deprecated name of :attr:`profile` (``"cpu"``/``"gpu"`` in earlier versions)."""
        warnings.warn("LessonSettings.scale is now LessonSettings.profile", FutureWarning, stacklevel=2)
        return self.profile

    def for_live_runs(self) -> "LessonSettings":
        """The sizes of a lesson's short live training (lessons 06, 07): the profile's own, except under
        ``paper``, where they are the ``gpu`` profile's: only lesson 05 trains a published schedule."""
        if self.profile != "paper":
            return self
        return GPU_SETTINGS.smoke_sized() if self.quick else GPU_SETTINGS

    def smoke_sized(self) -> "LessonSettings":
        """This profile's code path at the smoke sizes (what ``make test`` executes for every profile)."""
        sizes = {k: getattr(SMOKE_SETTINGS, k) for k in SMOKE_SIZE_FIELDS}
        return replace(self, **sizes, quick=True)


#: The fields :meth:`LessonSettings.smoke_sized` shrinks (the code path's switches stay).
SMOKE_SIZE_FIELDS = ("width", "crop_size", "batch_size", "iterations", "live_iterations", "eval_every", "eval_scales",
                     "num_workers")

#: Seconds per lesson: what ``make test`` runs (every profile's code path at these sizes).
SMOKE_SETTINGS = LessonSettings(
    profile="smoke", width=0.25, crop_size=128, batch_size=4, iterations=8, live_iterations=4, eval_every=2,
    eval_scales=(1.0,), num_workers=0, quick=True,
)
#: Minutes on 2 CPU cores: width 0.25, 128 px crops; lesson 05 trains 300 of its 2,000 iterations live and loads
#: the shipped checkpoint (the same recipe, run to the end).
CPU_SETTINGS = LessonSettings(
    profile="cpu", width=0.25, crop_size=128, batch_size=8, iterations=2000, live_iterations=300, eval_every=100,
    eval_scales=(0.75, 1.0, 1.25), num_workers=0,
)
#: The default on a GPU: minutes on a T4-class card. Twice the width (four times the compute per pixel),
#: 192 px crops, batch 16, 3,000 iterations trained live, mixed precision, channels-last, loader workers.
#: Still from random initialisation on the embedded set: no download, nothing to cache.
GPU_SETTINGS = LessonSettings(
    profile="gpu", width=0.5, crop_size=192, batch_size=16, iterations=3000, live_iterations=3000, eval_every=500,
    eval_scales=(0.75, 1.0, 1.25), num_workers=min(4, os.cpu_count() or 1), amp=True, channels_last=True,
)
#: Opt-in only (``DEEPLAB_PROFILE=paper``): the published recipe, meant for real PASCAL VOC 2012 and ImageNet
#: weights (``TrainConfig.paper``); hours per model on one GPU.
PAPER_SETTINGS = LessonSettings(
    profile="paper", width=1.0, crop_size=321, batch_size=10, iterations=20000, live_iterations=20000,
    eval_every=2000, eval_scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), num_workers=min(4, os.cpu_count() or 1),
    amp=True, channels_last=True, pretrained=True,
)

#: Every profile by name; ``DEEPLAB_PROFILE`` picks one.
PROFILES = {s.profile: s for s in (SMOKE_SETTINGS, CPU_SETTINGS, GPU_SETTINGS, PAPER_SETTINGS)}

#: Each lesson's expected run time in minutes, per profile: the smoke run (``make test``), 2 CPU cores
#: (``make run``), a T4-class GPU, and the papers' schedules where a lesson trains them (None: it does not
#: train, so the profile changes nothing). The trainer warns when a run projects to far more
#: (:func:`deeplab_lessons.train.engine.projection`). ``results/notebook_times.json`` holds measured times.
LESSON_MINUTES = {
    "00_start_here": {"smoke": 0.5, "cpu": 1, "gpu": 1, "paper": None},
    "01_receptive_fields": {"smoke": 0.5, "cpu": 1, "gpu": 1, "paper": None},
    "02_atrous_convolution": {"smoke": 0.5, "cpu": 1, "gpu": 1, "paper": None},
    "03_stride8_vgg": {"smoke": 0.5, "cpu": 2, "gpu": 2, "paper": None},
    "04_aspp": {"smoke": 0.5, "cpu": 1, "gpu": 1, "paper": None},
    "05_training_on_voc": {"smoke": 1, "cpu": 4, "gpu": 8, "paper": 600},
    "06_dense_crf": {"smoke": 1, "cpu": 6, "gpu": 4, "paper": None},
    "07_deeplab_v3_and_beyond": {"smoke": 1, "cpu": 3, "gpu": 5, "paper": None},
    "08_crf_as_rnn": {"smoke": 1, "cpu": 4, "gpu": 3, "paper": None},
}


def profile_name(dev: torch.device | str | None = None) -> str:
    """``$DEEPLAB_PROFILE`` if set, else ``gpu`` on a CUDA device and ``cpu`` otherwise (never ``paper``)."""
    name = os.environ.get("DEEPLAB_PROFILE", "").strip()
    legacy = os.environ.get("DEEPLAB_SCALE", "").strip()
    if not name and legacy:
        warnings.warn("DEEPLAB_SCALE is now DEEPLAB_PROFILE (smoke, cpu, gpu or paper); honouring "
                      f"DEEPLAB_SCALE={legacy!r} as the profile", FutureWarning, stacklevel=3)
        name = legacy
    if name:
        if name not in PROFILES:
            raise ValueError(f"DEEPLAB_PROFILE must be one of {', '.join(PROFILES)}, got {name!r}")
        return name
    dev = torch.device(dev) if dev is not None else device()
    return "gpu" if dev.type == "cuda" else "cpu"


def lesson_settings(dev: torch.device | str | None = None) -> LessonSettings:
    """The settings of the active profile (:func:`profile_name`): ``cpu`` on a CPU, ``gpu`` on a GPU.

    Under ``make test`` (``DEEPLAB_TEST=1``) the profile's code path runs at the smoke sizes
    (:meth:`LessonSettings.smoke_sized`), so every profile's cells are exercised in seconds.
    """
    settings = PROFILES[profile_name(dev)]
    return settings.smoke_sized() if in_test() and not settings.quick else settings


def budget_note(lesson: str, settings: LessonSettings | None = None) -> str:
    """One Markdown line: the lesson's expected run time under each profile, the active one in bold."""
    if lesson not in LESSON_MINUTES:
        raise ValueError(f"no run-time budget for lesson {lesson!r}; lessons: {', '.join(LESSON_MINUTES)}")
    active = (settings or lesson_settings()).profile
    labels = {"smoke": "smoke (tests)", "cpu": "CPU (2 cores)", "gpu": "GPU (T4 class)", "paper": "paper"}
    parts = []
    for name, minutes in LESSON_MINUTES[lesson].items():
        shown = "as on the GPU (this lesson trains no paper schedule)" if minutes is None else f"about {minutes:g} min"
        text = f"{labels[name]}: {shown}"
        parts.append(f"**{text}** (active)" if name == active else text)
    return "Expected run time of this lesson, per profile (`DEEPLAB_PROFILE`): " + "; ".join(parts) + "."


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
