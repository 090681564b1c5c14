"""The training engine: :func:`train` runs one :class:`~.recipe.TrainConfig` and scores the result.

The loop is wired from small functions, each one step of the recipe: :func:`build_optimizer`
(two parameter groups, the classifier at ``classifier_lr_mult`` x), :func:`resume` (model,
optimizer, scaler and RNG from ``last.pt``), :func:`set_lr` (poly or step schedule),
:func:`train_step` (forward, the loss of :mod:`.loss` on every output, backward, step),
:func:`score` (whole validation images, one confusion matrix, reduced over processes, at the
evaluation output stride); :func:`.checkpoint.run_state` is what a checkpoint holds.

Under ``torchrun`` each process trains on its own share of every batch with
``DistributedDataParallel`` (``nccl`` on GPUs, ``gloo`` on CPUs); ``batch_size`` is per process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from deeplab_lessons import config
from deeplab_lessons.data.palette import IGNORE_INDEX
from deeplab_lessons.data.sampling import AugmentedSamples, SampleStream
from deeplab_lessons.data.transforms import train_transforms
from deeplab_lessons.data.voc import VOCSegmentation
from deeplab_lessons.inference import at_output_stride, autocast_dtype, evaluate, output_stride_of
from deeplab_lessons.metrics import ConfusionMatrix
from deeplab_lessons.models.common import classifier_parameters, normalize
from deeplab_lessons.models.norm import freeze_batchnorm
from deeplab_lessons.models.registry import pretrained_backbone

from .checkpoint import load_checkpoint, plain_metrics, run_state, save_checkpoint
from .loss import segmentation_loss
from .recipe import RUN_FIELDS, TrainConfig


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``model`` (unwrapped, eval mode), ``metrics`` (final evaluation, as :func:`evaluate` minus the
    matrix), ``history`` (``iteration``/``loss``/``lr`` every ``log_every`` steps and
    ``eval_iteration``/``mean_iou`` at every evaluation), ``checkpoint`` (path of ``model.pt`` or
    None without ``out``), ``train_seconds`` (optimizer steps only, evaluation excluded),
    ``images_per_second`` (training images per second over all processes) and ``iteration`` (last one run).
    """

    model: nn.Module
    metrics: dict
    history: dict
    checkpoint: Path | None
    train_seconds: float
    images_per_second: float
    iteration: int


def dist_env() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from torchrun's environment; ``(0, 1, 0)`` without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def deterministic(enabled: bool, device: torch.device):
    """Run the block with ``torch.use_deterministic_algorithms`` (warn only) and deterministic cuDNN."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (the papers) or AdamW over two groups: the backbone at 1x, the classifier at ``classifier_lr_mult`` x."""
    head = {id(p) for p in classifier_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in head], "lr_mult": 1.0},
              {"params": [p for p in params if id(p) in head], "lr_mult": cfg.classifier_lr_mult}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``tensors`` (a state dict or named parameters) holding NaN or inf."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def resume(cfg: TrainConfig, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
           scaler: torch.amp.GradScaler, device: torch.device) -> tuple[int, dict]:
    """Load ``path`` (a ``last.pt``) into the run; returns ``(iteration, history)`` to continue from."""
    state = load_checkpoint(path, map_location=device)
    saved = state["config"]
    differ = [k for k in RUN_FIELDS if saved.get(k) != getattr(cfg, k)]
    if differ:
        raise ValueError(f"--resume: {path} was trained with different "
                         f"{', '.join(f'{k}={saved.get(k)!r}' for k in differ)}; pass the same settings")
    bad = non_finite(state["model"])
    if bad:
        raise ValueError(f"--resume: {path} holds non-finite weights ({bad[0]}{' and others' if len(bad) > 1 else ''}): "
                         "it cannot be continued; start afresh with --overwrite and a lower --lr")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state["scaler"] and scaler.is_enabled():       # a float16 run's scale; CPU and bfloat16 runs keep none
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if device.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), device)
    return int(state["iteration"]), state["history"]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group ``lr`` times its ``lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]


def train_step(net: nn.Module, images: torch.Tensor, targets: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, output_stride: int, amp_dtype: torch.dtype | None,
               label_target: str = "upsample", channels_last: bool = False) -> torch.Tensor:
    """One optimizer step on a batch; returns the (detached) loss.

    The loss of :func:`.loss.segmentation_loss` on the logits, summed over every output a model
    returns in training (v2's MSC: the fused map and each scale's, ``{"out": ..., "scales": [...]}``).
    ``amp_dtype``: CUDA autocast to that type (``None``: full precision); the loss is taken in float32.
    """
    x = normalize(images)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None):
        out = net(x)
    outputs = [out["out"], *out.get("scales", [])] if isinstance(out, dict) else [out]
    loss = sum(segmentation_loss(o.float(), targets, output_stride, label_target) for o in outputs)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


#: Iterations timed (after the first, which pays for warm-up) before the trainer projects the run's duration.
PROJECT_AFTER = 5


def projection(seconds: float, steps: int, total: int) -> float:
    """Projected seconds for ``total`` iterations when ``steps`` of them took ``seconds``."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    return seconds / steps * total


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3.2 min"`` or ``"2.5 h"``."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def budget_warning(projected_seconds: float, budget_minutes: float | None, factor: float = 2.0) -> str | None:
    """A warning when the projection exceeds ``factor`` times the budget; ``None`` within it or without one."""
    if budget_minutes is None or projected_seconds <= factor * budget_minutes * 60:
        return None
    return (f"this run projects to {format_duration(projected_seconds)}, far beyond its budget of about "
            f"{budget_minutes:g} min: interrupt it (the kernel's stop button) and lower the iterations or pick a "
            "lighter profile (DEEPLAB_PROFILE; lesson 00 lists them); a run with out= resumes from last.pt")


def score(model: nn.Module, val_loader, cfg: TrainConfig, device: torch.device, amp: bool, world: int) -> dict:
    """:func:`evaluate` on this process's share of the validation split, reduced over processes.

    With ``cfg.eval_output_stride`` the model (v3/v3+) runs at that output stride for the
    evaluation and is put back at its training stride afterwards.
    """
    cm = ConfusionMatrix(cfg.num_classes, IGNORE_INDEX)
    with at_output_stride(model, cfg.eval_output_stride, repr(cfg.model)):
        scores = evaluate(model, val_loader, cfg.num_classes, device=device, scales=cfg.eval_scales,
                          flip=cfg.eval_flip, amp=amp, confusion=cm)
    if world > 1:
        cm.all_reduce()
        scores = {**cm.compute(), "confusion": cm}
    return scores


def train(cfg: TrainConfig, callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on VOC (or the embedded set) with DeepLab's recipe; evaluate on ``cfg.val_split``.

    Writes ``cfg.out/last.pt`` every ``checkpoint_every`` iterations and at the end (resumable),
    ``cfg.out/model.pt`` (weights + config + final metrics, for
    :func:`~deeplab_lessons.train.load_model`) and ``cfg.out/history.json``. A non-finite loss
    stops the run with ``FloatingPointError`` before anything is overwritten, so the last good
    ``last.pt`` stays. Only rank 0 writes files and shows progress; ``callback(history)`` is
    called there after every logged step and every evaluation (the notebook's live plot).
    """
    rank, world, local_rank = dist_env()
    own_group = False
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend=backend)
        own_group = True
    if cfg.device is not None:
        device = torch.device(cfg.device)
    elif world > 1 and torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
    else:
        device = config.device()
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    amp = device.type == "cuda" if cfg.amp is None else (cfg.amp and device.type == "cuda")
    try:
        with deterministic(cfg.deterministic, device), Interrupt() as interrupt:
            return _run(cfg, callback, rank, world, device, amp, interrupt)
    finally:
        if own_group:
            torch.distributed.destroy_process_group()


#: The files a run folder holds; a folder with any of them holds a run.
RUN_FILES = ("last.pt", "model.pt", "history.json")


def prepare_out(cfg: TrainConfig) -> Path | None:
    """Check ``cfg.out`` before anything trains; returns it as a ``Path`` (None without one).

    A file, a folder that cannot be written, or a folder holding a run (:data:`RUN_FILES`) that
    ``cfg`` neither resumes nor overwrites is a ``ValueError`` saying what to do. With
    ``overwrite`` the old run's ``model.pt`` and ``history.json`` are deleted first and its ``last.pt``
    is replaced at the new run's first checkpoint, so the folder never mixes two runs' results.
    """
    if not cfg.out:
        return None
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file, not a folder: give a folder for the run's checkpoints")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if cfg.resume:
        if not (out / "last.pt").is_file():
            raise FileNotFoundError(f"--resume: {out / 'last.pt'} not found: nothing to resume in {out} (start the "
                                    "run without --resume)")
    elif held and not cfg.overwrite:
        state = "a finished run" if "model.pt" in held else "an interrupted run"
        raise ValueError(f"out={str(out)!r} already holds {state} ({', '.join(held)}): continue it with --resume "
                         "(resume=True), write elsewhere with another --out, or replace it with --overwrite "
                         "(overwrite=True)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"out={str(out)!r} cannot be written ({err.strerror or err}): give a folder you can "
                         "write to") from None
    if cfg.overwrite and not cfg.resume:       # the old run's results go at once; its last.pt is replaced (atomically)
        for name in held:                      # at the new run's first checkpoint, so the folder never mixes two runs
            if name != "last.pt":
                (out / name).unlink(missing_ok=True)
    return out


class Interrupt:
    """While active, Ctrl-C (SIGINT) and SIGTERM only set :attr:`signal`; the loop checkpoints and stops.

    A second Ctrl-C or SIGTERM while the first is being handled stops at once (the previous handlers
    are back). Outside the main thread (where Python allows no handlers) it does nothing.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "Interrupt":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        self.restore()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self.restore()


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`train` after Ctrl-C or SIGTERM, once ``last.pt`` is written: ``path``, ``iteration``."""

    def __init__(self, message: str, path: Path | None, iteration: int, signum: int) -> None:
        super().__init__(message)
        self.path, self.iteration, self.signum = path, iteration, signum


def _write_history(out: Path, cfg: TrainConfig, history: dict, metrics: dict) -> None:
    """``out/history.json``: the run's config, history and final metrics (empty for an unfinished run)."""
    (out / "history.json").write_text(json.dumps({"config": cfg.as_dict(), "history": history, "metrics": metrics},
                                                 indent=1) + "\n")


def _run(cfg: TrainConfig, callback, rank: int, world: int, device: torch.device, amp: bool,
         interrupt: Interrupt) -> TrainResult:
    from tqdm.auto import tqdm

    out = prepare_out(cfg) if rank == 0 else (Path(cfg.out) if cfg.out else None)
    root = Path(cfg.data) if cfg.data else config.voc_root()
    train_set, val_set = VOCSegmentation(root, cfg.train_split), VOCSegmentation(root, cfg.val_split)
    if train_set.num_classes != cfg.num_classes:
        raise ValueError(f"num_classes={cfg.num_classes} but the data set has {train_set.num_classes} classes")
    torch.manual_seed(cfg.seed)
    model = cfg.build().to(device)
    channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = autocast_dtype(device) if amp else None
    frozen = pretrained_backbone(model) if (
        (cfg.pretrained and cfg.batch_size < 16) if cfg.freeze_bn is None else cfg.freeze_bn) else None
    if cfg.freeze_bn and frozen is None:
        warnings.warn(f"freeze_bn=True: model {cfg.model!r} has no pretrained backbone with BatchNorm (only the v3/v3+ "
                      "ResNets have one); nothing is frozen", stacklevel=2)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)   # bfloat16 needs no scaling
    last_path = out / "last.pt" if out else None
    start, history = 0, {"iteration": [], "loss": [], "lr": [], "eval_iteration": [], "mean_iou": []}
    stop = cfg.stop_at if cfg.stop_at is not None else cfg.iterations
    if cfg.resume:
        start, history = resume(cfg, last_path, model, optimizer, scaler, device)
        if start >= stop:
            done = "the run is finished" if start >= cfg.iterations else f"stop_at={cfg.stop_at}"
            raise ValueError(f"--resume: {last_path} is at iteration {start}, and {done}: nothing to train (raise "
                             f"--stop-at, or load {out / 'model.pt'} with load_model)")

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    samples = AugmentedSamples(train_set, train_transforms(cfg.crop_size, (cfg.scale_min, cfg.scale_max), cfg.flip),
                               cache=len(train_set) <= 2000 and cfg.num_workers == 0)
    loader = torch.utils.data.DataLoader(
        samples, batch_sampler=SampleStream(len(train_set), cfg.batch_size, cfg.seed, start, stop, rank, world),
        num_workers=cfg.num_workers, pin_memory=device.type == "cuda", generator=torch.Generator(),
        prefetch_factor=4 if cfg.num_workers else None)
    scored = min(cfg.val_images, len(val_set)) if cfg.val_images else len(val_set)
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, list(range(rank, scored, world))),
                                             batch_size=1, num_workers=cfg.num_workers, generator=torch.Generator(),
                                             pin_memory=device.type == "cuda")

    def evaluate_now(iteration: int) -> dict:
        scores = score(model, val_loader, cfg, device, amp, world)
        history["eval_iteration"].append(iteration)
        history["mean_iou"].append(scores["mean_iou"])
        if callback is not None and rank == 0:
            callback(history)
        return scores

    bar = tqdm(total=stop, initial=start, desc=f"train {cfg.model}", disable=not cfg.progress or rank != 0,
               dynamic_ncols=True)
    loss_sum = torch.zeros((), device=device)
    steps_in_window, train_seconds, iteration, good_iteration, scores = 0, 0.0, start, start, None
    model.train()
    if frozen is not None:
        freeze_batchnorm(frozen)
    tick = time.perf_counter()
    for images, targets in loader:
        lr = cfg.lr_at(iteration)
        set_lr(optimizer, lr)
        loss_sum += train_step(net, images.to(device, non_blocking=True), targets.to(device, non_blocking=True),
                               optimizer, scaler, output_stride_of(model), amp_dtype, cfg.label_target, channels_last)
        iteration += 1
        if iteration in (start + 1, start + 1 + PROJECT_AFTER) and device.type == "cuda":
            torch.cuda.synchronize(device)
        if iteration == start + 1:
            timed_from = train_seconds + time.perf_counter() - tick       # the training clock: saves and evaluations
        elif iteration == start + 1 + PROJECT_AFTER and rank == 0:       # are not on it
            busy = train_seconds + time.perf_counter() - tick - timed_from
            projected = projection(busy, PROJECT_AFTER, stop - start)
            if cfg.progress:
                bar.write(f"projected: {stop - start} iterations in about {format_duration(projected)} "
                          f"(evaluations not included)")
            message = budget_warning(projected, cfg.budget_minutes)
            if message:
                warnings.warn(message, RuntimeWarning, stacklevel=3)
        steps_in_window += 1
        interrupted = interrupt.signal is not None               # Ctrl-C / SIGTERM: checkpoint this step, stop
        log_now = iteration % cfg.log_every == 0 or iteration == stop or interrupted
        save_now = last_path is not None and rank == 0 and (
            (cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0) or iteration == stop or interrupted)
        eval_now = (cfg.eval_every and iteration % cfg.eval_every == 0) or iteration == cfg.iterations
        if log_now or save_now or eval_now:
            mean_loss = float(loss_sum) / steps_in_window
            problem = None
            if not math.isfinite(mean_loss):
                problem = (f"training loss became {mean_loss} between iterations "
                           f"{iteration - steps_in_window + 1} and {iteration}")
            elif save_now and non_finite(dict(model.named_parameters())):
                problem = f"weights became non-finite at iteration {iteration}"
            if problem is not None:
                bar.close()
                kept = f"The last good checkpoint {last_path} (iteration {good_iteration}) is kept" \
                    if last_path is not None and last_path.exists() else "No checkpoint was written"
                raise FloatingPointError(f"{problem}; stopped. {kept}. Lower --lr (now {cfg.lr}) or check "
                                         f"the data, then --resume.")
            for key, value in (("iteration", iteration), ("loss", mean_loss), ("lr", lr)):
                history[key].append(value)
            loss_sum.zero_()
            steps_in_window = 0
            bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}", refresh=False)
            if callback is not None and rank == 0 and log_now:
                callback(history)
        bar.update(1)
        if save_now or eval_now:
            train_seconds += time.perf_counter() - tick
        if eval_now:        # before this iteration's checkpoint: a run killed while it evaluates resumes before it
            scores = evaluate_now(iteration)
            model.train()
            if frozen is not None:
                freeze_batchnorm(frozen)
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", lr=f"{lr:.2e}", miou=f"{scores['mean_iou']:.3f}",
                            refresh=False)
        if save_now:
            save_checkpoint(run_state(cfg, model, iteration, history, {}, optimizer, scaler, device), last_path)
            good_iteration = iteration
        if save_now or eval_now:
            tick = time.perf_counter()
        if interrupted:
            break
    train_seconds += time.perf_counter() - tick
    bar.close()
    if interrupt.signal is not None and iteration < stop:
        if out is not None and rank == 0:
            _write_history(out, cfg, history, {})
        name = signal.Signals(interrupt.signal).name
        kept = (f"{last_path} holds iteration {iteration}: continue with --resume (resume=True) and the same "
                f"settings" if last_path is not None else "nothing was saved (no out= folder was given)")
        raise TrainingInterrupted(f"{name}: training stopped after iteration {iteration} of {stop}; {kept}",
                                  last_path, iteration, interrupt.signal)

    model.eval()
    metrics: dict = {}
    final_path = None
    if iteration == cfg.iterations:
        if not history["eval_iteration"] or history["eval_iteration"][-1] != iteration or scores is None:
            scores = evaluate_now(iteration)
        metrics = plain_metrics(scores)
        if non_finite(dict(model.named_parameters())):
            raise FloatingPointError(f"weights became non-finite by iteration {iteration}; model.pt is not written. "
                                     f"Lower --lr (now {cfg.lr}) and start afresh with --overwrite.")
        if out is not None and rank == 0:
            final_path = save_checkpoint(run_state(cfg, model, iteration, history, metrics), out / "model.pt")
    if out is not None and rank == 0:
        _write_history(out, cfg, history, metrics)
    steps = iteration - start
    return TrainResult(model=model, metrics=metrics, history=history, checkpoint=final_path,
                       train_seconds=train_seconds,
                       images_per_second=steps * cfg.batch_size * world / train_seconds if train_seconds > 0 else 0.0,
                       iteration=iteration)
