"""What the experiments measure on a trained model, beyond the mean IoU.

Every function takes predictions already made (label maps) or a model and the validation
images, and returns plain numbers, so the runner can store them in a results file:

- :func:`segmentation_measures`: the mean IoU and per-class IoU from one confusion matrix, the
  foreground/background IoU (are objects found at all?), per-object accuracy by object-size
  tercile (v2's claim that ASPP helps across scales) and the accuracy on the two classes only
  the image's tint tells apart (:data:`~deeplab_lessons.data.synthetic.IMAGE_CUE_PAIR`);
- :func:`crf_measures`: the dense CRF's gain overall and within trimap bands of several widths,
  with the papers' order (upsample, then CRF);
- :func:`crf_search`: v1's coarse-to-fine CRF parameter search on held-out images, scored on others;
- :func:`cue_flips`: the effective receptive field measured on data: change one object's badge
  and count which of its pixels change their predicted class, by distance from the badge.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from deeplab_lessons.crf import CRFParams, V1_SEARCH_RANGES, CRFSample, coarse_to_fine, refine, trimap_band
from deeplab_lessons.data.palette import IGNORE_INDEX
from deeplab_lessons.data.synthetic import IMAGE_CUE_PAIR
from deeplab_lessons.inference import forward_logits, predict
from deeplab_lessons.metrics import ConfusionMatrix
from deeplab_lessons.models.common import normalize, upsample_logits

#: Trimap band widths (pixels from a boundary) of the CRF measure; "beyond" counts pixels farther than the last.
CRF_BANDS = (2, 4, 8, 16, 24)

#: Distance bins (pixels from the badge's centre) of the cue-flip measure.
FLIP_BINS = tuple(range(0, 105, 8))


def dilated_tap_shares(model: torch.nn.Module, input_size: int | Sequence[int]) -> dict[str, float]:
    """For every dilated convolution of ``model`` (dilation > 1), the share of its non-centre taps that
    land on its input map at ``input_size``, averaged over output positions
    (:func:`~deeplab_lessons.models.off_centre_tap_share`): below about 15 % a branch barely trains.

    The map sizes come from one forward pass of a zero image (hooks record each conv's input size).
    """
    from deeplab_lessons.models import off_centre_tap_share

    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    shapes, hooks = {}, []

    def record(name: str):
        def hook(module, inputs, output) -> None:          # returns None: the output is left as it is
            shapes.setdefault(name, (module, tuple(inputs[0].shape[-2:])))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and max(module.dilation) > 1:
            hooks.append(module.register_forward_hook(record(name)))
    param = next(model.parameters())
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *size, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return {name: round(off_centre_tap_share(hw, m.dilation[0], m.kernel_size[0], m.padding[0]), 4)
            for name, (m, hw) in shapes.items()}


#: The crop each paper trained its networks at (pixels): v1/v2's released configs 321 (41 x 41 maps at output
#: stride 8), v3's 513 (33 x 33 at output stride 16, 65 x 65 at 8).
PAPER_CROPS = {"v1": 321, "v2": 321, "v3": 513}

#: Below this share of its non-centre taps on the map (averaged over output positions) a dilated conv barely trains.
MIN_TAP_SHARE = 0.15


def object_regions(target: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(class, bool mask)`` of every connected region of one object class in a label map (void excluded)."""
    regions = []
    for c in np.unique(target):
        if c == 0 or c == IGNORE_INDEX:
            continue
        parts, n = ndimage.label(target == c)
        regions += [(int(c), parts == k) for k in range(1, n + 1)]
    return regions


def segmentation_measures(predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                          num_classes: int = 21, pair: tuple[int, int] = IMAGE_CUE_PAIR) -> dict:
    """Scores of predicted label maps against targets (both [H, W]; 255 = void).

    Returns ``mean_iou``, ``iou`` (per class, None where a class is absent from both),
    ``pixel_accuracy``, ``foreground_iou`` (any object class vs background), ``size_terciles``
    (object-size bounds as sqrt(area) in pixels, and the mean fraction of an object's pixels
    labelled with its class in each third) and ``pair_accuracy`` (on pixels of the two classes of
    ``pair``: correct / (correct + the pair's other class); 0.5 is chance, None if absent).
    """
    cm = ConfusionMatrix(num_classes, IGNORE_INDEX)
    fg = np.zeros(3, dtype=np.int64)            # intersection, prediction-only, target-only
    sizes, accuracies = [], []
    pair_right = pair_swapped = 0
    for pred, target in zip(predictions, targets):
        pred, target = np.asarray(pred), np.asarray(target)
        cm.update(torch.as_tensor(pred), torch.as_tensor(target))
        scored = target != IGNORE_INDEX
        p_fg, t_fg = (pred > 0) & scored, (target > 0) & scored
        fg += [np.sum(p_fg & t_fg), np.sum(p_fg & ~t_fg), np.sum(~p_fg & t_fg)]
        for c, mask in object_regions(target):
            sizes.append(float(np.sqrt(mask.sum())))
            accuracies.append(float(np.mean(pred[mask] == c)))
        for c, other in (pair, pair[::-1]):
            on = target == c
            pair_right += int(np.sum(pred[on] == c))
            pair_swapped += int(np.sum(pred[on] == other))
    scores = cm.compute()
    iou = [None if not np.isfinite(v) else float(v) for v in np.asarray(scores["iou"], dtype=float)]
    out = {"mean_iou": float(scores["mean_iou"]), "pixel_accuracy": float(scores["pixel_accuracy"]), "iou": iou,
           "foreground_iou": float(fg[0] / max(fg.sum(), 1)),
           "pair_accuracy": (pair_right / (pair_right + pair_swapped)) if pair_right + pair_swapped else None}
    if sizes:
        sizes_a, acc_a = np.asarray(sizes), np.asarray(accuracies)
        bounds = np.quantile(sizes_a, [1 / 3, 2 / 3])
        third = np.digitize(sizes_a, bounds)
        out["size_terciles"] = {"bounds_px": [float(b) for b in bounds],
                                "accuracy": [float(acc_a[third == k].mean()) if np.any(third == k) else None
                                             for k in range(3)],
                                "objects": [int(np.sum(third == k)) for k in range(3)]}
    return out


@torch.no_grad()
def crf_measures(images: Sequence[np.ndarray], logits: Sequence[torch.Tensor], targets: Sequence[np.ndarray],
                 params: CRFParams | None = None, output_stride: int = 8, bands: Sequence[int] = CRF_BANDS,
                 num_classes: int = 21, refiner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                 ) -> dict:
    """The CRF's gain (mIoU after - before) over whole images and inside each trimap band.

    ``images`` uint8 [H, W, 3], ``logits`` [C, h, w] at ``output_stride``, ``targets`` [H, W].
    The CRF runs on the bilinearly upsampled softmax (the papers' order): the dense CRF with ``params``,
    or ``refiner(image [H, W, 3] uint8 tensor, upsampled logits [C, H, W])``, which returns refined
    scores ``[C, H, W]`` (e.g. a trained :class:`~deeplab_lessons.crf.CRFasRNN`). Returns ``before``,
    ``after`` (mean IoU), ``gain``, and ``bands``: for each width w, ``{"before", "after", "gain",
    "pixels"}`` on the pixels within w px of a boundary, plus ``"beyond"`` (farther than the widest band).
    """
    params = params if params is not None else CRFParams()
    keys = [str(w) for w in bands] + ["beyond"]
    whole = [ConfusionMatrix(num_classes, IGNORE_INDEX) for _ in range(2)]
    banded = {k: [ConfusionMatrix(num_classes, IGNORE_INDEX) for _ in range(2)] for k in keys}
    pixels = {k: 0 for k in keys}
    for image, logit, target in zip(images, logits, targets):
        target_t = torch.as_tensor(np.asarray(target)).long()
        size = tuple(target_t.shape)
        upsampled = upsample_logits(logit[None].float(), size, output_stride)[0]
        before = upsampled.argmax(0)
        if refiner is None:
            after = refine(image, logit, params, order="upsample_first", output_stride=output_stride).argmax(0)
        else:
            after = refiner(torch.as_tensor(np.asarray(image)), upsampled).argmax(0)
        masks = {str(w): trimap_band(target_t, int(w)) for w in bands}
        masks["beyond"] = ~masks[str(max(bands))] & (target_t != IGNORE_INDEX)
        for k, pred in enumerate((before, after)):
            whole[k].update(pred, target_t)
            for key, mask in masks.items():
                banded[key][k].update(pred[mask], target_t[mask])
        for key, mask in masks.items():
            pixels[key] += int(mask.sum())
    b, a = (float(m.compute()["mean_iou"]) for m in whole)
    out = {"before": b, "after": a, "gain": a - b, "bands": {}}
    for key in keys:
        bb, aa = (_finite(m.compute()["mean_iou"]) for m in banded[key])
        gain = None if bb is None or aa is None else aa - bb
        out["bands"][key] = {"before": bb, "after": aa, "gain": gain, "pixels": pixels[key]}
    return out


def _finite(value) -> float | None:
    """A float, or None for NaN (a band with no scored pixel)."""
    value = float(value)
    return value if np.isfinite(value) else None


def crf_search(search: Sequence[CRFSample], grid: dict | None = None, base: CRFParams | None = None,
               num_classes: int = 21) -> dict:
    """v1's coarse-to-fine search (arXiv 1412.7062 Sec. 5) over ``grid`` on the ``search`` images.

    Default grid: the ends and middle of v1's ranges (:data:`~deeplab_lessons.crf.V1_SEARCH_RANGES`),
    refined once at half the spacing. Returns the best parameters (as a dict), their mean IoU on
    the search images and how many combinations were scored.
    """
    grid = grid if grid is not None else {k: [lo, (lo + hi) / 2, hi] for k, (lo, hi) in V1_SEARCH_RANGES.items()}
    best, score, everything = coarse_to_fine(search, grid, base, num_classes)
    return {"best": {k: getattr(best, k) for k in grid}, "search_miou": float(score), "scored": len(everything)}


@torch.no_grad()
def cue_flips(model: torch.nn.Module, scenes: Sequence[tuple], bins: Sequence[int] = FLIP_BINS) -> dict:
    """How far the badge's information reaches: fraction of an object's pixels whose prediction
    changes to the new class when only its badge is recoloured, by distance from the badge centre.

    ``scenes`` are ``(image, relabelled image, objects, index, new class)`` tuples: the same
    scene rendered twice by :func:`~deeplab_lessons.data.synthesize_scene`, the second with
    object ``index``'s badge in the colour of ``new class``, one badge per object (``badge_reach=None``:
    distances are from that badge). Only the body pixels (badge excluded) of that object count.
    Returns ``bins`` (edges, px), ``flipped`` (fraction per bin, None where empty) and ``pixels`` per bin.
    """
    edges = np.asarray(bins, dtype=float)
    flipped, counts = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
    for image, changed, objects, index, new in scenes:
        batch = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in (image, changed)])
        p0, p1 = (p.numpy() for p in predict(model, batch))
        obj = objects[index]
        h, w = p0.shape
        yy, xx = np.mgrid[0:h, 0:w]
        dist = np.hypot(xx - obj["badge"][0], yy - obj["badge"][1])
        body = (p0 == obj["label"]) & (dist > obj["badge_radius"])      # pixels the model had right
        which = np.digitize(dist[body], edges) - 1
        hit = (p1[body] == new)
        ok = (which >= 0) & (which < len(counts))
        np.add.at(counts, which[ok], 1)
        np.add.at(flipped, which[ok], hit[ok])
    frac = [float(f / c) if c else None for f, c in zip(flipped, counts)]
    return {"bins": [float(e) for e in edges], "flipped": frac, "pixels": [int(c) for c in counts]}

