"""Checkpoints: written atomically, read with ``torch.load(..., weights_only=True)``, rebuilt into models.

A run folder holds ``last.pt`` (resumable: model, optimizer, AMP scaler and RNG states, the
iteration and history) and ``model.pt`` (final weights, the :class:`TrainConfig` that built them
and the final scores). :func:`load_model` rebuilds the network from the stored config.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable

import torch
from torch import nn

from deeplab_lessons import config

from .recipe import TrainConfig

#: Format tag stored in every checkpoint this package writes.
CHECKPOINT_FORMAT = "deeplab_lessons.train/1"

#: The model shipped with the project: ``TrainConfig()`` (the CPU default run) trained on the
#: embedded set; ``load_model(LESSON_CHECKPOINT)`` returns it (README, "Training", says how it was made).
LESSON_CHECKPOINT = config.REPO_ROOT / "checkpoints" / "largefov_cpu.pt"

#: Where lesson 05 writes its run (``last.pt`` while it trains, ``model.pt`` once it has run to the end).
LESSON_RUN = config.REPO_ROOT / "runs" / "05_training_on_voc"


def write_atomically(path: Path | str, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Call ``write(handle)`` on a temporary file in ``path``'s folder, then ``os.replace`` it onto ``path``.

    A reader never sees a half-written file, and an interrupted write leaves the old one intact.
    The file gets the usual mode (0666 minus the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def save_checkpoint(state: dict, path: Path | str) -> Path:
    """Write ``state`` with ``torch.save`` atomically (:func:`write_atomically`)."""
    return write_atomically(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`~deeplab_lessons.train.train` with ``torch.load(..., weights_only=True)``.

    Returns the dict: ``format``, ``config`` (a :class:`TrainConfig` as a dict), ``model`` (state
    dict), ``iteration``, ``metrics``, ``history`` and, in resumable ``last.pt`` files, the
    optimizer, AMP scaler and RNG states. Raises ``FileNotFoundError`` / ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        # torch's own message may advise weights_only=False, which would run code from the file: not repeated here
        raise ValueError(f"checkpoint {path} could not be read ({type(err).__name__}): it is truncated, corrupt or "
                         "not a file this package wrote. Delete it and retrain, or resume from another copy of the run") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a deeplab_lessons training checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def load_model(path: Path | str, device: torch.device | str | None = None) -> nn.Module:
    """Rebuild the model stored in a checkpoint from its config and load its weights; returned in eval mode.

    ``device`` defaults to ``config.device()``. The model's ``train_config`` attribute holds the
    stored :class:`TrainConfig` and ``checkpoint_metrics`` the scores recorded with it.
    """
    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    model = cfg.build(pretrained=False)
    model.load_state_dict(state["model"])
    model.train_config = cfg
    model.checkpoint_metrics = state.get("metrics", {})
    return model.to(device if device is not None else config.device()).eval()


def lesson_model(settings: config.LessonSettings | None = None, device: torch.device | str | None = None,
                 run: Path | str = LESSON_RUN) -> tuple[nn.Module | None, str]:
    """The trained LargeFOV lessons 06 and 07 start from, and a sentence saying which one it is.

    Under the ``gpu`` and ``paper`` profiles, lesson 05's finished run of the same profile
    (``run/model.pt`` whose width, crop, batch and iterations are the profile's) when it is there;
    otherwise the shipped CPU checkpoint (:data:`LESSON_CHECKPOINT`: the ``cpu`` profile's run,
    2,000 iterations); ``(None, reason)`` when neither exists (the caller trains a short run).
    """
    from .recipe import TrainConfig

    settings = settings if settings is not None else config.lesson_settings()
    candidate = Path(run) / "model.pt"
    if settings.profile in ("gpu", "paper") and not settings.quick and candidate.is_file():
        wanted = TrainConfig.from_settings(settings)
        stored = TrainConfig.from_dict(load_checkpoint(candidate)["config"])
        keys = ("model", "width", "crop_size", "batch_size", "iterations")
        if all(getattr(stored, k) == getattr(wanted, k) for k in keys):
            model = load_model(candidate, device)
            return model, (f"lesson 05's {settings.profile}-profile run ({stored.iterations} iterations, width "
                           f"{stored.width:g}, {stored.crop_size} px crops)")
    if LESSON_CHECKPOINT.is_file():
        model = load_model(LESSON_CHECKPOINT, device)
        cfg = model.train_config
        note = "" if settings.profile in ("smoke", "cpu") else \
            f" (run lesson 05 under the {settings.profile} profile to use a {settings.profile}-sized model here)"
        return model, (f"the shipped CPU checkpoint ({cfg.iterations} iterations, width {cfg.width:g}, "
                       f"{cfg.crop_size} px crops){note}")
    return None, f"no trained model: neither {candidate.name} in lesson 05's run folder nor the shipped checkpoint"


def run_state(cfg: TrainConfig, model: nn.Module, iteration: int, history: dict, metrics: dict,
              optimizer: torch.optim.Optimizer | None = None, scaler: torch.amp.GradScaler | None = None,
              device: torch.device | None = None) -> dict:
    """A checkpoint's contents: ``model.pt`` without ``optimizer``, ``last.pt`` (resumable) with it."""
    state = {"format": CHECKPOINT_FORMAT, "config": cfg.as_dict(), "model": model.state_dict(),
             "iteration": iteration, "history": history, "metrics": metrics,
             "torch_version": str(torch.__version__), "num_threads": torch.get_num_threads()}
    if optimizer is not None:
        rng = {"torch": torch.get_rng_state()}
        if device is not None and device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        state.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=rng)
    return state


def plain_metrics(scores: dict) -> dict:
    """The scores without the confusion matrix, as plain floats (for JSON and checkpoints)."""
    return {"pixel_accuracy": scores["pixel_accuracy"], "mean_accuracy": scores["mean_accuracy"],
            "mean_iou": scores["mean_iou"], "iou": [float(v) for v in scores["iou"]]}
