"""Running an experiment: every (arm, seed) trained once, measured, and recorded as it finishes.

The results file ``results/<name>.json`` is rewritten atomically after each run, so a killed
suite loses one training, and a rerun skips every (arm, seed) already recorded with the same
configuration. Trained weights are kept in ``runs/experiments/<key>/model.pt`` (not committed):
an arm shared by two experiments (LargeFOV appears in four) is trained once. ``key`` is a hash
of everything that defines the training and of the data set's generator marker.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import io
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from deeplab_lessons import config
from deeplab_lessons.crf import CRFasRNN, CRFParams, CRFSample
from deeplab_lessons.data.synthetic import IMAGE_CUE_PAIR, JPEG_QUALITY, synthesize_scene
from deeplab_lessons.data.voc import VOCSegmentation
from deeplab_lessons.inference import at_output_stride, forward_logits, predict
from deeplab_lessons.models.common import normalize, upsample_logits
from deeplab_lessons.train import (LESSON_CHECKPOINT, RUN_FIELDS, CRFTraining, TrainConfig, load_model, refined_miou,
                                   train, train_crf_as_rnn, write_atomically)

from .measures import MIN_TAP_SHARE, crf_measures, crf_search, cue_flips, dilated_tap_shares, segmentation_measures
from .suite import (CRF_RNN_TRAINING, DEFAULT_SEEDS, EXPERIMENTS, SMOKE_CRF_RNN_TRAINING, SMOKE_TRAINING, Arm,
                    Experiment)

#: Where results files are committed, and where trained weights are cached (ignored by git).
RESULTS_DIR = config.REPO_ROOT / "results"
RUNS_DIR = config.REPO_ROOT / "runs" / "experiments"

#: Validation images used for v1's CRF parameter search; the CRF is scored on the others.
CRF_SEARCH_IMAGES = 30

#: Smallest object (radius, px) whose badge the cue experiment changes.
CUE_MIN_RADIUS = 20.0

#: Results file format (bumped if the layout changes).
RESULTS_FORMAT = 1


def command(name: str, seeds: Sequence[int] = DEFAULT_SEEDS) -> str:
    """The command line that reproduces ``results/<name>.json``."""
    extra = "" if tuple(seeds) == DEFAULT_SEEDS else " --seeds " + " ".join(map(str, seeds))
    return f"OMP_NUM_THREADS=1 python -m deeplab_lessons.experiments {name}{extra}"


def data_marker(voc: Path) -> dict:
    """The embedded set's generator marker (``SYNTHETIC``), or ``{"real_voc": path}`` for PASCAL VOC."""
    marker = Path(voc) / "SYNTHETIC"
    return json.loads(marker.read_text()) if marker.exists() else {"real_voc": str(voc)}


def run_config(exp: Experiment, arm: Arm, seed: int, voc: Path | None, smoke: bool = False) -> TrainConfig:
    """The :class:`TrainConfig` of one (arm, seed) of ``exp`` on the data set at ``voc`` (None: the default one)."""
    budget = dict(SMOKE_TRAINING) if smoke else dict(exp.budget)
    train_opts = dict(arm.train)
    if smoke and train_opts.get("lr_policy") == "step":
        train_opts["lr_step"] = 1
    return TrainConfig(**budget, **train_opts, seed=seed, data=None if voc is None else str(voc), progress=False,
                       num_workers=0)


def run_key(cfg: TrainConfig, marker: dict) -> str:
    """A short hash of what defines a training: :data:`RUN_FIELDS` and the data set's marker."""
    values = {k: v for k, v in cfg.as_dict().items() if k in RUN_FIELDS}
    blob = json.dumps({"run": values, "data": marker}, sort_keys=True, default=list)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (never half a file)."""
    write_atomically(path, lambda handle: handle.write(json.dumps(payload, indent=1) + "\n"), binary=False)


#: Evaluations of the validation split in every training run of the suite (its learning curve).
HISTORY_POINTS = 5


def eval_interval(iterations: int, points: int = HISTORY_POINTS) -> int:
    """Iterations between evaluations so that a run of ``iterations`` is scored ``points`` times (the last at its end)."""
    return max(1, iterations // points)


def trained_model(cfg: TrainConfig, folder: Path, log: Callable[[str], None] = print) -> tuple[torch.nn.Module, dict]:
    """The model ``cfg`` trains: loaded from ``folder/model.pt`` when a finished run is there, else trained into it.

    Returns ``(model in eval mode, info)`` with the run's learning curve ``history`` (a list of
    ``{"iteration", "mean_iou"}``, :data:`HISTORY_POINTS` evaluations), ``train_seconds``,
    ``images_per_second``, ``finished`` time and the machine's load average when it finished.
    """
    info_path = folder / "info.json"
    lock = folder / ".training"
    while not info_path.exists() and _held(lock):
        time.sleep(10)                         # another process is training this run: wait for it
    if (folder / "model.pt").exists() and info_path.exists():
        return load_model(folder / "model.pt", device="cpu").eval(), json.loads(info_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    log(f"  training {cfg.model} seed {cfg.seed} ({cfg.iterations} iterations) -> {folder}")
    interrupted = (folder / "last.pt").is_file() and not (folder / "model.pt").exists()   # a killed suite's run
    result = train(TrainConfig.from_dict({**cfg.as_dict(), "out": str(folder), "resume": interrupted,
                                          "overwrite": not interrupted, "eval_every": eval_interval(cfg.iterations)}))
    history = [{"iteration": int(t), "mean_iou": round(float(m), 5)}
               for t, m in zip(result.history["eval_iteration"], result.history["mean_iou"])]
    info = {"history": history,
            "train_seconds": round(result.train_seconds, 1), "images_per_second": round(result.images_per_second, 1),
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "load_average": [round(x, 2) for x in os.getloadavg()], "threads": torch.get_num_threads(),
            "machine": platform.machine()}
    write_json_atomic(info_path, info)
    lock.unlink(missing_ok=True)
    return result.model.eval(), info


def _held(lock: Path) -> bool:
    """True while ``lock`` names a live process other than this one (a crashed run leaves a stale lock)."""
    try:
        pid = int(lock.read_text())
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def arm_tap_shares(experiment: str, *crop_sizes: int) -> dict[str, list[dict[str, float]]]:
    """For every arm of the suite's ``experiment``: each dilated conv's share of non-centre taps on its input map
    (:func:`dilated_tap_shares`) at each of ``crop_sizes`` (default: the experiment's training crop), one dict
    per crop, from the arm's own model at the suite's width (built once; random weights: the shares depend on the
    architecture and the crop only)."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; known: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[experiment]
    crops = [int(c) for c in crop_sizes] or [exp.budget["crop_size"]]
    out = {}
    for arm in exp.arms:
        model = run_config(exp, arm, 0, None).build(pretrained=False)
        out[arm.label] = [dilated_tap_shares(model, size) for size in crops]
    return out


def tap_share_rows(experiment: str, paper_crop: int) -> list[dict]:
    """One row per arm: the worst dilated conv at the experiment's training crop and at ``paper_crop``, and how
    many of the arm's dilated convs keep fewer than :data:`MIN_TAP_SHARE` of their taps on the map at each."""
    crop = EXPERIMENTS[experiment].budget["crop_size"] if experiment in EXPERIMENTS else None
    rows = []
    for arm, (shares, papers) in arm_tap_shares(experiment, crop, paper_crop).items():
        if not shares:
            rows.append({"arm": arm, "convs": 0})
            continue
        worst = min(shares, key=shares.get)
        worst_paper = min(papers, key=papers.get)
        rows.append({"arm": arm, "convs": len(shares), "crop": crop, "paper_crop": paper_crop,
                     "worst": worst, "worst_share": shares[worst],
                     "worst_paper": worst_paper, "worst_paper_share": papers[worst_paper],
                     "starved": sum(v < MIN_TAP_SHARE for v in shares.values()),
                     "starved_paper": sum(v < MIN_TAP_SHARE for v in papers.values())})
    return rows


def _val_pairs(voc: Path, limit: int | None) -> tuple[VOCSegmentation, list[int]]:
    ds = VOCSegmentation(voc, "val")
    return ds, list(range(len(ds) if limit is None else min(limit, len(ds))))


def measure_segmentation(model, voc: Path, arm: Arm, limit: int | None = None) -> dict:
    """:func:`.measures.segmentation_measures` of ``model`` on the validation split (whole images)."""
    ds, indices = _val_pairs(voc, limit)
    preds, targets = [], []
    with at_output_stride(model, arm.evaluate.get("eval_output_stride")):
        for i in indices:
            image, target = ds[i]
            preds.append(predict(model, image[None])[0].numpy())
            targets.append(target.numpy())
    return segmentation_measures(preds, targets)


@torch.no_grad()
def _crf_inputs(model, voc: Path, limit: int | None, search_images: int = CRF_SEARCH_IMAGES) -> tuple[list, list, int]:
    """The validation images as (image [H, W, 3] uint8, stride-8 logits [C, h, w], target) triples, and
    how many of the first ones form the search set (the rest are the report set)."""
    ds, indices = _val_pairs(voc, limit)
    model.eval()
    images, logits, targets = [], [], []
    for i in indices:
        image, target = ds[i]
        images.append(image.permute(1, 2, 0).contiguous())
        logits.append(forward_logits(model, normalize(image[None]))[0].float())
        targets.append(target.numpy())
    return list(zip(images, logits, targets)), _search_split(len(indices), search_images)


def _search_split(count: int, search_images: int = CRF_SEARCH_IMAGES) -> int:
    """How many of ``count`` validation images form the search set: ``search_images``, at most half."""
    return min(search_images, max(1, count // 2))


def _search(triples: Sequence[tuple], limit: int | None) -> dict:
    """v1's coarse-to-fine search (:func:`.measures.crf_search`) on the search images (a 2-point grid when smoke)."""
    search_set = [CRFSample(image, torch.softmax(upsample_logits(logit[None], target.shape, 8)[0], 0),
                            torch.as_tensor(target)) for image, logit, target in triples]
    grid = None if limit is None else {"bi_w": [5.0], "bi_xy_std": [50.0, 100.0], "bi_rgb_std": [3.0]}
    return crf_search(search_set, grid=grid)


@torch.no_grad()
def measure_crf(model, voc: Path, limit: int | None = None, search_images: int = CRF_SEARCH_IMAGES) -> dict:
    """The CRF's gain with DeepLab's released parameters and with v1's search on held-out images.

    The first ``search_images`` validation images are the search set; the CRF is scored on the
    rest (v1 searched on 100 of the val images it reported on; holding them out is stricter).
    """
    triples, split = _crf_inputs(model, voc, limit, search_images)
    report = tuple(zip(*triples[split:]))
    released = crf_measures(*report, params=CRFParams())
    search = _search(triples[:split], limit)
    searched = crf_measures(*report, params=CRFParams().replace(**search["best"]))
    return {"released_params": released, "search": search, "searched_params": searched,
            "search_images": split, "report_images": len(triples) - split}


def measure_crf_rnn(model, voc: Path, arm: Arm, seed: int, smoke: bool = False) -> dict:
    """One arm of the CRF-as-RNN experiment (:mod:`.suite`) on ``model`` (the shipped LargeFOV).

    ``arm.evaluate["crf"]`` is ``"none"`` (the network alone), ``"released"`` (DeepLab's parameters),
    ``"search"`` (v1's search on the search images) or ``"learned"`` (a :class:`~deeplab_lessons.crf.CRFasRNN`
    trained by :func:`~deeplab_lessons.train.train_crf_as_rnn` in ``arm.evaluate["mode"]`` on the training split,
    its learning curve read on the search images). An arm with ``"mode": "network"`` fine-tunes the network
    alone the same way and then applies the released CRF. Every arm is scored on the report images (the
    validation images after the search set) with :func:`.measures.crf_measures`: ``mean_iou`` is the
    arm's final mIoU, ``before`` the network's own.
    """
    limit = 4 if smoke else None
    kind, mode = arm.evaluate["crf"], arm.evaluate.get("mode")
    budget = _crf_rnn_budget(smoke)
    test_iterations = budget.pop("test_iterations")
    crf = CRFasRNN(21, CRFParams(), iterations=test_iterations)
    extra: dict = {}
    if mode is not None:
        ds, indices = _val_pairs(voc, limit)
        tune = [ds[i] for i in indices[:_search_split(len(indices))]]       # the search images

        def evaluate(net, layer) -> float:
            return refined_miou(net, None if mode == "network" else layer, tune)

        train_split = VOCSegmentation(voc, "train")
        data = torch.utils.data.Subset(train_split, range(min(8, len(train_split)))) if smoke else train_split
        result = train_crf_as_rnn(model, crf, data, CRFTraining(mode=mode, seed=seed, **budget), evaluate=evaluate)
        extra = {"history": [{"iteration": h["step"], "mean_iou": h["mean_iou"]} for h in result.history],
                 "seconds_per_step": round(result.seconds_per_step, 3),
                 "seconds_per_image": round(result.seconds_per_image, 3), "crf_training": {**budget, "mode": mode}}
    triples, split = _crf_inputs(model, voc, limit)
    report = tuple(zip(*triples[split:]))
    with torch.no_grad():
        if kind == "none":
            measures = crf_measures(*report, refiner=lambda image, scores: scores)
        elif kind == "released":
            measures = crf_measures(*report, params=CRFParams())
        elif kind == "search":
            search = _search(triples[:split], limit)
            measures = {**crf_measures(*report, params=CRFParams().replace(**search["best"])), "search": search}
        elif kind == "learned":
            measures = crf_measures(*report, refiner=lambda image, scores: crf(image[None], scores[None])[0])
            w1, w2 = (float(w) for w in crf.weights)
            measures["crf_parameters"] = {"bi_w": w1, "pos_w": w2,
                                          "compatibility": [[round(float(v), 5) for v in row]
                                                            for row in crf.compatibility]}
        else:
            raise ValueError(f"arm {arm.label!r}: unknown CRF {kind!r} (none, released, search, learned)")
    measures["mean_iou"] = measures["after"]
    measures["report_images"] = len(triples) - split
    measures["search_images"] = split
    return {"measures": measures, **extra}


def cue_scenes(voc: Path, limit: int | None = None, min_radius: float = CUE_MIN_RADIUS) -> list[tuple]:
    """For each validation scene of the embedded set: the scene and its copy with one object's
    badge changed (every object of radius >= ``min_radius``; JPEG-compressed like the set).

    The scenes are redrawn with one badge per object (``badge_reach=None``): the set itself adds
    badges wherever a body reaches farther than :data:`~deeplab_lessons.data.synthetic.BADGE_REACH`
    from one, which would leave no pixel far from a cue to measure.
    """
    marker = data_marker(voc)
    if "generator_version" not in marker:
        raise ValueError(f"{voc}: the cue experiment redraws scenes of the embedded set; it cannot run on real VOC")
    ds, indices = _val_pairs(voc, limit)
    size = tuple(marker["size"])
    scenes = []
    for i in indices:
        scene = functools.partial(synthesize_scene, marker["seed"], int(ds.ids[i].rsplit("_", 1)[-1]), size,
                                  tuple(marker["classes"]), marker["void_width"], badge_reach=None)
        image, _, objects = scene()
        for k, obj in enumerate(objects):
            if obj["radius"] < min(min_radius, 0.1 * min(size)):
                continue
            new = _other_class(obj["label"])
            changed, _, _ = scene(relabel={k: new})
            scenes.append((_jpeg(image), _jpeg(changed), objects, k, new))
    return scenes


def _other_class(label: int) -> int:
    """A class with another badge colour than ``label``'s (the next one, skipping the shared-badge pair)."""
    new = label % 20 + 1
    while new in IMAGE_CUE_PAIR or new == label:
        new = new % 20 + 1
    return new


def _jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def measure(exp: Experiment, arm: Arm, model, voc: Path, smoke: bool = False) -> dict:
    """What ``exp`` measures on one trained ``model`` (see :mod:`.suite`)."""
    limit = 4 if smoke else None
    if exp.kind == "crf":
        return measure_crf(model, voc, limit)
    if exp.kind == "cue":
        return cue_flips(model, cue_scenes(voc, limit))
    return measure_segmentation(model, voc, arm, limit)


def load_results(path: Path | str) -> dict:
    """A results file as written by :func:`run_experiment` (a clear error if it is not one)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no results recorded; run `{command(path.stem)}`") from None
    except ValueError as err:
        raise ValueError(f"{path} is not a results file (invalid JSON: {err}); delete it and rerun "
                         f"`{command(path.stem)}`") from None
    if payload.get("format") != RESULTS_FORMAT or "records" not in payload:
        raise ValueError(f"{path} is not a results file of format {RESULTS_FORMAT}; rerun `{command(path.stem)}`")
    return payload


def default_results_dir(smoke: bool, marker: dict, data_given: bool) -> Path:
    """Where results go when no folder is named: the committed :data:`RESULTS_DIR` only for the full
    budget on the default embedded set; smoke runs and runs on other data get a folder under ``runs/``
    (ignored by git), so they never touch the recorded results."""
    default_data = not data_given and "generator_version" in marker
    if default_data and not smoke:
        return RESULTS_DIR
    tag = "" if default_data else "-" + hashlib.sha1(json.dumps(marker, sort_keys=True).encode()).hexdigest()[:8]
    return RUNS_DIR / (("results-smoke" if smoke else "results") + tag)


def run_experiment(name: str, seeds: Sequence[int] = DEFAULT_SEEDS, smoke: bool = False, data: str | Path | None = None,
                   results_dir: Path | str | None = None, runs_dir: Path | str | None = None,
                   log: Callable[[str], None] = print, overwrite: bool = False) -> dict:
    """Run every (arm, seed) of experiment ``name`` not yet recorded; return the results.

    Args:
        name: a key of :data:`.suite.EXPERIMENTS`.
        seeds: the seeds of every arm.
        smoke: the tiny budget of :data:`.suite.SMOKE_TRAINING` and 4 validation images (tests).
        data: the VOC2012 folder (default: ``config.voc_root()``, the embedded set here).
        results_dir: where the results file goes (default: :func:`default_results_dir`: ``results/``
            only for the full budget on the default embedded set).
        runs_dir: where trained weights are cached.
        overwrite: replace a results file recorded with another budget or data set; without it such a
            file is refused with a ``ValueError`` (nothing is trained, nothing is written).

    The results file is rewritten after every run; a record of the same (arm, seed) made with
    another configuration of its arm is replaced.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    exp = EXPERIMENTS[name]
    voc = Path(data) if data is not None else config.voc_root()
    marker = data_marker(voc)
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir(smoke, marker, data is not None)
    runs_dir = Path(runs_dir) if runs_dir is not None else RUNS_DIR
    path = results_dir / f"{name}.json"
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a file: give another --results-dir")
    results = load_results(path) if path.exists() else None
    budget = dict(SMOKE_TRAINING) if smoke else dict(exp.budget)
    other = results is not None and (results.get("budget") != budget or results.get("data") != marker)
    if other and not overwrite:
        what = "budget" if results.get("budget") != budget else "data set"
        raise ValueError(f"{path} holds {len(results['records'])} records made with another {what} than this run's "
                         f"({'smoke' if smoke else 'full'} budget on {voc}): they are kept. Give --results-dir another "
                         "folder, or --overwrite to replace them")
    if results is None or other:
        results = {"format": RESULTS_FORMAT, "experiment": name, "title": exp.title, "source": exp.source,
                   "question": exp.question, "command": command(name, seeds), "budget": budget, "data": marker,
                   "records": []}
    memo: dict[tuple, dict] = {}             # measures that do not depend on the seed, computed once per process
    base = crf_rnn_base(smoke) if exp.kind == "crf-rnn" else None
    crf_training = _crf_rnn_budget(smoke) if base is not None else None
    for arm in exp.arms:
        for seed in seeds:
            cfg = run_config(exp, arm, seed, None if data is None else voc, smoke)
            train_key = run_key(cfg, marker)
            key = train_key if base is None else run_key(cfg, {**marker, **base, "arm": arm.evaluate,
                                                                "crf_training": crf_training})
            results["records"] = _recorded(path, results)
            done = [r for r in results["records"] if r["arm"] == arm.label and r["seed"] == seed]
            if done and done[0]["key"] == key:
                continue
            log(f"{name}: {arm.label}, seed {seed}")
            if base is not None and not smoke:
                model, info = load_model(LESSON_CHECKPOINT, device="cpu").eval(), {}
            else:
                model, info = trained_model(cfg, runs_dir / train_key, log)
            start = time.perf_counter()
            if base is None:
                measures = measure(exp, arm, model, voc, smoke)
            else:
                memo_key = (arm.label, train_key if smoke else base["base_sha1"])
                seeded = "mode" in arm.evaluate
                measured = memo.get(memo_key) or measure_crf_rnn(model, voc, arm, seed, smoke)
                if not seeded:
                    memo[memo_key] = measured
                measures = measured["measures"]
                info = {**base, **{k: v for k, v in measured.items() if k != "measures"},
                        "seed_dependent": seeded}
            record = {"arm": arm.label, "seed": seed, "key": key, "train": arm.train, "evaluate": arm.evaluate,
                      "paper": arm.paper, "measures": measures, "measure_seconds": round(time.perf_counter() - start, 1),
                      "geometry": {"crop_size": cfg.crop_size,
                                   "off_centre_tap_share": dilated_tap_shares(model, cfg.crop_size)},
                      **info}
            others = [r for r in _recorded(path, results) if not (r["arm"] == arm.label and r["seed"] == seed)]
            results["records"] = others + [record]
            write_json_atomic(path, results)
    return results


def _crf_rnn_budget(smoke: bool) -> dict:
    return dict(SMOKE_CRF_RNN_TRAINING if smoke else CRF_RNN_TRAINING)


def crf_rnn_base(smoke: bool) -> dict:
    """What the CRF-as-RNN experiment starts from: the shipped LargeFOV (its path and SHA-1), or, for a
    smoke run, the smoke budget's LargeFOV trained like every other arm."""
    if smoke:
        return {"base": "the smoke budget's LargeFOV"}
    if not LESSON_CHECKPOINT.is_file():
        raise FileNotFoundError(f"{LESSON_CHECKPOINT}: the CRF-as-RNN experiment starts from the shipped LargeFOV; "
                                "restore it with `git checkout -- checkpoints/`")
    digest = hashlib.sha1(LESSON_CHECKPOINT.read_bytes()).hexdigest()[:12]
    return {"base": str(LESSON_CHECKPOINT.relative_to(config.REPO_ROOT)), "base_sha1": digest}


def _recorded(path: Path, results: dict) -> list[dict]:
    """The records of ``results`` merged with those another process wrote to ``path`` meanwhile
    (same budget and data only); a record on disk wins over none in memory."""
    try:
        on_disk = load_results(path)
    except (FileNotFoundError, ValueError):
        return list(results["records"])
    if on_disk.get("budget") != results["budget"] or on_disk.get("data") != results["data"]:
        return list(results["records"])
    merged = {(r["arm"], r["seed"]): r for r in results["records"]}
    merged.update({(r["arm"], r["seed"]): r for r in on_disk["records"]})
    return list(merged.values())
