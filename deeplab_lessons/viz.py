"""Pure plotting and drawing functions behind the lessons and their widgets.

Every function takes arrays/tensors/parameters and returns data or a matplotlib ``Figure``;
nothing here holds state or touches ipywidgets (see :mod:`deeplab_lessons.widgets`).
"""

from __future__ import annotations

__all__ = [
    "figure_png", "figure_png_base64", "plot_rf_stack", "dilated_kernel_cells", "plot_dilation_stack",
    "plot_fields_on_image", "plot_gradient_field", "plot_maps", "label_map", "palette_legend", "plot_label_maps",
    "plot_trimap_curves", "plot_training_history", "plot_experiment", "plot_curves_with_spread",
    "MEAN_FIELD_LAYERS", "plot_mean_field_as_layers", "plot_compatibility",
]

# ============================================================================================
# Receptive fields and atrous convolution (lessons 01 and 02)
# ============================================================================================

import base64  # noqa: E402
import io  # noqa: E402

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .atrous import dilate_kernel  # noqa: E402
from .receptive_field import (LayerRF, footprint_2d, level_footprints,  # noqa: E402
                              receptive_fields_from_specs)

#: viridis with zero (strictly: below the smallest count) drawn pale grey: "never reached".
_COUNTS_CMAP = matplotlib.colormaps["viridis"].with_extremes(under="0.88")


def figure_png(fig: Figure, dpi: int = 72) -> bytes:
    """PNG bytes of ``fig`` (fast, lightly compressed: what the widgets send to the browser)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def figure_png_base64(fig: Figure, dpi: int = 72) -> str:
    """:func:`figure_png` as base64 text, the form of an ``image/png`` notebook output."""
    return base64.b64encode(figure_png(fig, dpi)).decode("ascii")


def _reusable_figure(fig: Figure | None, key: str, figsize: tuple[float, float], build):
    """``(fig, artists)``: the artists of ``fig`` if a previous call of plot ``key`` made it,
    else a new pyplot-free ``Figure`` (or ``fig`` cleared) with artists from ``build(fig)``.

    Reusing artists (set_data instead of redrawing axes) is what keeps a widget redraw fast.
    """
    if fig is not None and getattr(fig, "_lesson_plot", None) == key:
        return fig, fig._lesson_artists
    if fig is None:
        fig = Figure(figsize=figsize)
    else:
        fig.clear()
    fig._lesson_artists = build(fig)
    fig._lesson_plot = key
    return fig, fig._lesson_artists


def _counts_image(ax, title: str):
    image = ax.imshow(np.zeros((1, 1)), cmap=_COUNTS_CMAP, interpolation="nearest")
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    return image, ax.set_title(title, fontsize=10)


def _show_counts(image, counts: np.ndarray, log: bool = True) -> None:
    """Put an integer count map into ``image``; zeros show pale grey."""
    data = np.log1p(counts) if log else (counts > 0).astype(float)
    image.set_data(data)
    image.set_extent((-0.5, counts.shape[1] - 0.5, counts.shape[0] - 0.5, -0.5))
    image.set_clim(1e-9, max(float(data.max()), 1e-6))
    image.axes.set_xlim(-0.5, counts.shape[1] - 0.5)
    image.axes.set_ylim(counts.shape[0] - 0.5, -0.5)


def _build_rf_stack(fig: Figure) -> dict:
    ax_units, ax_grid = fig.subplots(1, 2, width_ratios=(1.6, 1))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.82, wspace=0.22)
    units = ax_units.scatter([0], [0], s=14, c=[1.0], cmap=_COUNTS_CMAP, vmin=1e-9, vmax=1)
    ax_units.set_xlabel("input pixel (from the left edge of the field)")
    ax_units.set_title("units that feed the top unit (grey: skipped)", fontsize=10)
    footprint, grid_title = _counts_image(ax_grid, "")
    field = ax_grid.add_patch(Rectangle((-0.5, -0.5), 1, 1, fill=False, ec="red", lw=1.5))
    return {"units": units, "footprint": footprint, "grid_title": grid_title, "field": field,
            "suptitle": fig.suptitle("")}


def plot_rf_stack(specs, fig: Figure | None = None) -> Figure:
    """Which units feed one top unit, layer by layer (left), and its 2-D footprint (right).

    ``specs``: square layers ``(kernel, stride, dilation[, padding])`` in forward order. Left:
    every unit of every layer inside the top unit's field, placed at its centre in input pixels;
    coloured units feed the top unit (brighter: more paths), grey ones are skipped (holes).
    Right: how many paths join each input pixel to the top unit
    (:func:`~deeplab_lessons.receptive_field.footprint_2d`, log scale); the red square is the
    closed-form field (Araujo et al., Distill 2019). Pass the ``Figure`` a previous call
    returned as ``fig`` to redraw it in place (fast; the widgets do this).
    """
    rows = receptive_fields_from_specs(specs)
    levels = level_footprints(specs)
    fig, art = _reusable_figure(fig, "rf_stack", (9, 3.6), _build_rf_stack)
    sizes = [1] + [r.size for r in rows]
    jumps = [1] + [r.jump for r in rows]
    xs = np.concatenate([(sizes[l] - 1) / 2 + np.arange(len(c)) * jumps[l] for l, c in enumerate(levels)])
    ys = np.concatenate([np.full(len(c), l) for l, c in enumerate(levels)])
    counts = np.concatenate(levels)
    art["units"].set_offsets(np.column_stack([xs, ys]))
    art["units"].set_array(np.log1p(counts))
    art["units"].set_clim(1e-9, max(float(np.log1p(counts).max()), 1e-6))
    ax_units = art["units"].axes
    ax_units.set_xlim(-1, sizes[-1])
    ax_units.set_ylim(-0.5, len(levels) - 0.5)
    ax_units.set_yticks(range(len(levels)), ["input"] + [f"layer {i + 1}" for i in range(len(rows))])
    footprint = footprint_2d(specs)
    _show_counts(art["footprint"], footprint)
    art["field"].set_bounds(-0.5, -0.5, sizes[-1], sizes[-1])
    art["grid_title"].set_text(f"paths per input pixel (log), {(footprint > 0).mean():.0%} used")
    top = rows[-1]
    art["suptitle"].set_text(f"{len(rows)} layer(s): receptive field {top.size} x {top.size} px, "
                             f"jump (output stride) {top.jump} px")
    return fig


def dilated_kernel_cells(kernel_size: int, rate: int, cell: int = 9) -> np.ndarray:
    """Picture of a ``kernel_size``\\ :sup:`2` kernel at ``rate``: taps 1, holes 0, grid lines 0.5.

    Each kernel position becomes a ``cell x cell`` block framed by a one-pixel grid line, so the
    picture draws as a plain image (fast, no tick machinery). Side: ``((kernel_size - 1) * rate + 1)
    * cell + 1`` pixels (DeepLab v2, arXiv:1606.00915, fig. 2).
    """
    taps = dilate_kernel(torch.ones(kernel_size, kernel_size), rate).numpy()
    frame = np.zeros((cell, cell), dtype=bool)
    frame[0, :] = frame[:, 0] = True
    picture = np.kron(taps, np.ones((cell, cell)))
    picture[np.kron(np.ones_like(taps), frame).astype(bool)] = 0.5
    return np.pad(picture, ((0, 1), (0, 1)), constant_values=0.5)


def _build_dilation_stack(fig: Figure) -> dict:
    ax_kernel, ax_stack = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.12, top=0.84, wspace=0.15)
    kernel = ax_kernel.imshow(np.zeros((1, 1)), cmap="Blues", vmin=0, vmax=1.25,
                              interpolation="nearest")
    ax_kernel.set_axis_off()
    stack, stack_title = _counts_image(ax_stack, "")
    return {"kernel": kernel, "kernel_title": ax_kernel.set_title("", fontsize=10),
            "stack": stack, "stack_title": stack_title}


def plot_dilation_stack(kernel_size: int, rate: int, layers: int, fig: Figure | None = None) -> Figure:
    """One atrous kernel with its holes (left) and ``layers`` of it stacked, on an impulse (right).

    The right panel is the 2-D footprint of the stack (the impulse response of stride-1 layers
    with all-one weights; log scale, grey = zero): with the same ``rate > 1`` repeated, the holes
    never fill ("gridding", DeepLab v3 arXiv:1706.05587 section 3.1; Wang et al.
    arXiv:1702.08502). ``kernel_size`` must be odd (a centred kernel); ``rate``, ``layers`` >= 1.
    ``fig``: a Figure a previous call returned, to redraw in place.
    """
    if isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1 (a centred kernel), got {kernel_size}")
    if rate < 1 or layers < 1:
        raise ValueError(f"rate and layers must be >= 1, got rate={rate}, layers={layers}")
    fig, art = _reusable_figure(fig, "dilation_stack", (8.5, 4), _build_dilation_stack)
    picture = dilated_kernel_cells(kernel_size, rate)
    art["kernel"].set_data(picture)
    art["kernel"].set_extent((-0.5, picture.shape[1] - 0.5, picture.shape[0] - 0.5, -0.5))
    art["kernel"].axes.set_xlim(-0.5, picture.shape[1] - 0.5)
    art["kernel"].axes.set_ylim(picture.shape[0] - 0.5, -0.5)
    span = (kernel_size - 1) * rate + 1
    art["kernel_title"].set_text(f"{kernel_size}x{kernel_size} kernel at rate {rate}: "
                                 f"span {span} px, {kernel_size ** 2} weights")
    footprint = footprint_2d([(kernel_size, 1, rate)] * layers)
    _show_counts(art["stack"], footprint)
    art["stack_title"].set_text(f"{layers} layer(s), impulse: field {footprint.shape[0]} px, "
                                f"{(footprint > 0).mean():.0%} of it seen")
    return fig


def _image_hwc(image) -> np.ndarray:
    """``H x W x 3`` numpy array from a numpy image or a ``3 x H x W`` tensor."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.permute(1, 2, 0) if image.dim() == 3 and image.shape[0] in (1, 3) else image
        image = image.numpy()
    return np.asarray(image)


def plot_fields_on_image(image, rows: list[LayerRF], point: tuple[float, float],
                         labels: list[str] | None = None) -> Figure:
    """Receptive fields of several layers drawn on an image, for the unit nearest ``point``.

    ``image``: ``H x W x 3`` uint8 (or a ``3 x H x W`` tensor); ``rows``: :class:`LayerRF` with
    ``output_size`` (from ``receptive_fields(model, input_size=(H, W))``); ``point``: ``(y, x)``
    in pixels. For each layer the output unit whose field is centred nearest ``point`` is taken
    and its field drawn as a square; fields may reach past the image, into the zero padding.
    """
    image = _image_hwc(image)
    labels = labels if labels is not None else [r.name for r in rows]
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    ax.imshow(image)
    extent = [0.0, image.shape[1], 0.0, image.shape[0]]
    for i, (row, label) in enumerate(zip(rows, labels)):
        if row.output_size is None:
            raise ValueError(f"row {row.name!r} has no output_size: pass input_size to receptive_fields")
        cy, cx = (row.start + int(np.clip(round((c - row.start) / row.jump), 0, n - 1)) * row.jump
                  for c, n in zip(point, row.output_size))
        half = row.size / 2
        ax.add_patch(Rectangle((cx - half, cy - half), row.size, row.size, fill=False, ec=f"C{i}",
                               lw=2, label=f"{label}: {row.size} px"))
        ax.plot(cx, cy, "+", color=f"C{i}", ms=10, mew=2)
        extent = [min(extent[0], cx - half), max(extent[1], cx + half),
                  min(extent[2], cy - half), max(extent[3], cy + half)]
    ax.set_xlim(extent[0] - 2, extent[1] + 2)
    ax.set_ylim(extent[3] + 2, extent[2] - 2)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    ax.set_title("receptive field of one output unit per layer")
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    return fig


def plot_gradient_field(grad_map, row: LayerRF, position: tuple[int, int],
                        effective_size: int | None = None) -> Figure:
    """``|d out / d in|`` in linear (left) and log (right) scale, with the closed-form field.

    ``row``: the :class:`LayerRF` of the output layer; ``position``: ``(row, col)`` of the output
    unit. The red square is the theoretical field (Araujo et al. 2019); ``effective_size``, if
    given, is drawn as a dashed white square around the map's centroid (Luo et al. 2016,
    arXiv:1701.04128).
    """
    arr = np.asarray(grad_map, dtype=np.float64)
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_lin, ax_log = fig.subplots(1, 2)
    (top, bottom), (left, right) = row.span(position[0]), row.span(position[1])
    rows_idx, cols_idx = np.indices(arr.shape)
    cy, cx = (rows_idx * arr).sum() / arr.sum(), (cols_idx * arr).sum() / arr.sum()
    for ax, data, title in ((ax_lin, arr, "|d out / d in| (linear)"),
                            (ax_log, np.log10(np.maximum(arr, arr.max() * 1e-6)),
                             "log10 |d out / d in| (floor: max / 10^6)")):
        im = ax.imshow(data, cmap="magma", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1,
                               fill=False, ec="red", lw=1.5, label=f"theoretical: {row.size} px"))
        if effective_size is not None:
            half = effective_size / 2
            ax.add_patch(Rectangle((round(cx) - half, round(cy) - half), effective_size,
                                   effective_size, fill=False, ec="white", lw=1.5, ls="--",
                                   label=f"effective: {effective_size} px"))
        ax.set_title(title)
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    ax_lin.legend(loc="lower left", fontsize=8)
    return fig


def plot_maps(maps, titles: list[str], cmap: str = "viridis") -> Figure:
    """Several 2-D maps side by side (e.g. a strided and a dense feature map), each titled with its size."""
    maps = [np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m) for m in maps]
    if len(maps) != len(titles):
        raise ValueError(f"got {len(maps)} maps but {len(titles)} titles")
    fig = Figure(figsize=(3.6 * len(maps), 3.4), layout="constrained")
    for ax, data, title in zip(fig.subplots(1, len(maps), squeeze=False)[0], maps, titles):
        ax.imshow(data, cmap=cmap, interpolation="nearest")
        ax.set_title(f"{title}\n{data.shape[0]} x {data.shape[1]}")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    return fig


# ============================================================================================
# Dense CRF (lesson 06)
# ============================================================================================

from matplotlib.patches import Patch  # noqa: E402

from .data.palette import VOC_CLASSES, VOC_PALETTE, colorize  # noqa: E402


def label_map(probs) -> np.ndarray:
    """``argmax`` over the class axis of ``[C, H, W]`` probabilities (numpy or torch) -> int64 ``[H, W]``."""
    if isinstance(probs, torch.Tensor):
        return probs.detach().argmax(dim=0).cpu().numpy()
    return np.asarray(probs).argmax(axis=0)


def palette_legend(ax, labels, class_names=VOC_CLASSES, loc: str = "upper left", min_share: float = 0.01) -> None:
    """A legend of the VOC colours of the classes in ``labels`` (label maps; void left out).

    A class is listed when it covers at least ``min_share`` of the pixels of one of the maps,
    so a noisy prediction's specks do not list all 21 classes.
    """
    present = set()
    for lab in labels:
        values, counts = np.unique(np.asarray(lab), return_counts=True)
        present |= {int(v) for v, c in zip(values, counts) if int(v) != 255 and c >= min_share * counts.sum()}
    present = sorted(present)
    handles = [Patch(color=VOC_PALETTE[k] / 255.0, label=class_names[k] if k < len(class_names) else str(k))
               for k in present]
    ax.legend(handles=handles, loc=loc, bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)


def _build_label_panels(fig: Figure, count: int) -> dict:
    axes = fig.subplots(1, count, squeeze=False)[0]
    fig.subplots_adjust(left=0.02, right=0.86, bottom=0.03, top=0.74, wspace=0.05)
    art = {"images": [], "titles": [], "axes": axes}
    for ax in axes:
        art["images"].append(ax.imshow(np.zeros((2, 2, 3), dtype=np.uint8), interpolation="nearest"))
        art["titles"].append(ax.set_title("", fontsize=9))
        ax.set_xticks([])
        ax.set_yticks([])
    return art


def plot_label_maps(image, label_maps, titles, fig: Figure | None = None,
                    panel_size: float = 2.6, legend_from=None) -> Figure:
    """The image and several label maps (VOC colours) side by side, with one palette legend.

    ``image``: ``H x W x 3`` uint8; ``label_maps``: ``[H, W]`` class-index maps (255 = void,
    drawn cream) such as the network's argmax, the CRF's, the ground truth; ``titles``: one per
    panel, image first. Passing the ``fig`` of a previous call with as many panels updates its
    images in place (what the CRF explorer does on every slider move). The legend lists the
    classes of ``legend_from`` (label maps; default: all of ``label_maps``).
    """
    maps = [np.asarray(m) for m in label_maps]
    if len(titles) != len(maps) + 1:
        raise ValueError(f"need {len(maps) + 1} titles (image + each map), got {len(titles)}")
    count = len(maps) + 1
    fig, art = _reusable_figure(fig, f"label_maps_{count}", (panel_size * count + 1.6, panel_size * 1.1),
                                lambda f: _build_label_panels(f, count))
    for artist, title, data in zip(art["images"], art["titles"], [_image_hwc(image)] + [colorize(m) for m in maps]):
        artist.set_data(data)
        artist.set_extent((-0.5, data.shape[1] - 0.5, data.shape[0] - 0.5, -0.5))
        title.set_text("")
    for title, text in zip(art["titles"], titles):
        title.set_text(text)
    legend = art["axes"][-1].get_legend()
    if legend is not None:
        legend.remove()
    palette_legend(art["axes"][-1], maps if legend_from is None else legend_from)
    return fig


def plot_trimap_curves(widths, curves: dict, metric: str = "mean IoU (%)", title: str | None = None) -> Figure:
    """Score inside the boundary band against the band's width (DeepLab v1's trimap experiment, Sec. 5).

    ``widths``: band widths in pixels; ``curves``: ``{name: scores}`` with one score per width
    (percent), e.g. ``{"before CRF": [...], "after CRF": [...]}``.
    """
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (name, scores) in enumerate(curves.items()):
        ax.plot(list(widths), list(scores), marker="o", ms=3, color=f"C{i}", label=name)
    ax.set_xlabel("trimap band width (pixels)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} near object boundaries")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# ============================================================================================
# Training (lesson 05)
# ============================================================================================

def _build_history_axes(fig: Figure) -> dict:
    ax_loss, ax_miou = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.09, right=0.97, bottom=0.17, top=0.88, wspace=0.3)
    loss_line, = ax_loss.plot([], [], color="C0")
    miou_line, = ax_miou.plot([], [], color="C1", marker="o", ms=4)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss (cross-entropy)")
    ax_loss.set_title("loss")
    ax_miou.set_xlabel("iteration")
    ax_miou.set_ylabel("mean IoU on val")
    ax_miou.set_title("validation mean IoU")
    ax_miou.set_ylim(0, 1)
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
    return {"loss": (ax_loss, loss_line), "miou": (ax_miou, miou_line)}


def plot_training_history(history: dict, fig: Figure | None = None, iterations: int | None = None) -> Figure:
    """Training loss and validation mean IoU against the iteration, side by side.

    ``history``: what :func:`deeplab_lessons.train.train` records (``iteration``, ``loss``,
    ``eval_iteration``, ``mean_iou``); ``iterations``: x-axis end (default: the last logged one).
    Passing the ``fig`` of a previous call updates its lines in place (the live plot of lesson 05).
    """
    fig, art = _reusable_figure(fig, "training_history", (8.0, 3.0), _build_history_axes)
    end = iterations or max(history["iteration"][-1:] + history["eval_iteration"][-1:] + [1])
    (ax_loss, loss_line), (ax_miou, miou_line) = art["loss"], art["miou"]
    loss_line.set_data(history["iteration"], history["loss"])
    miou_line.set_data(history["eval_iteration"], history["mean_iou"])
    for ax in (ax_loss, ax_miou):
        ax.set_xlim(0, end)
    if history["loss"]:
        ax_loss.set_ylim(0, max(history["loss"]) * 1.05)
    return fig


# ============================================================================================
# Recorded experiments (lessons 03-07): measured mean +- std over seeds beside the paper's numbers
# ============================================================================================

def plot_experiment(rows: list[dict], title: str, ylabel: str = "val mIoU (%)",
                    paper_label: str = "paper, VOC 2012 val (%; before the CRF where it gives both)") -> Figure:
    """Measured results (left) beside the paper's numbers for the same rows (right).

    ``rows``: dicts with ``arm``, ``mean``, ``std``, ``values`` (one per seed) and ``paper``
    (None where the paper has no such row), as :func:`deeplab_lessons.experiments.summary`
    returns. Left: the mean over seeds with a +-1 std error bar and each seed as a dot. Right:
    the paper's value. The two panels measure different data (embedded set vs VOC) and budgets;
    compare the *order and gaps* within a panel, not values across panels. Both panels run from 0
    to 100, so that neither exaggerates its gaps against the other.
    """
    fig = Figure(figsize=(9.0, 0.55 * len(rows) + 1.6), layout="constrained")
    ax, axp = fig.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows):
        ax.barh(yi, row["mean"], xerr=row["std"], color="C0", alpha=0.75, capsize=4)
        ax.plot(row["values"], [yi] * len(row["values"]), "o", color="k", ms=3)
        if row["paper"] is not None:
            axp.barh(yi, row["paper"], color="C1", alpha=0.75)
            axp.text(row["paper"], yi, f" {row['paper']:.2f}", va="center", fontsize=8)
        else:
            axp.text(0.02, yi, "no such row", va="center", fontsize=8, color="0.4", transform=axp.get_yaxis_transform())
    ax.set_yticks(y, [r["arm"] for r in rows])
    n = max((len(r["values"]) for r in rows), default=0)
    ax.set_xlabel(f"{ylabel}: mean +- std over {n} seeds (dots: seeds)")
    ax.set_title(f"{title} — measured here", fontsize=10)
    for a in (ax, axp):
        a.set_xlim(0, 100)
    axp.set_xlabel(paper_label)
    axp.set_title("published", fontsize=10)
    for a in (ax, axp):
        a.grid(axis="x", alpha=0.3)
    return fig


def plot_curves_with_spread(x, curves: dict, xlabel: str, ylabel: str, title: str) -> Figure:
    """Mean curves with a +-1 std band: ``curves`` maps a name to ``(mean, std)`` arrays over ``x``."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (name, (mean, std)) in enumerate(curves.items()):
        mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        ax.plot(x, mean, marker="o", ms=3, color=f"C{i}", label=name)
        ax.fill_between(x, mean - std, mean + std, color=f"C{i}", alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# ============================================================================================
# CRF as RNN (lesson 08)
# ============================================================================================

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

#: One mean-field iteration as layers (CRF as RNN, Zheng et al. 2015, Sec. 4): (name, what it computes, learnt?).
MEAN_FIELD_LAYERS = (
    ("normalising", "Q = softmax(E)", False),
    ("message passing", "filter Q: bilateral\nand Gaussian (lattice)", False),
    ("weighting", "w1 * bilateral\n+ w2 * Gaussian", True),
    ("compatibility", "1x1 conv with\nthe C x C matrix", True),
    ("adding the unary", "E = -U + messages", False),
)


def plot_mean_field_as_layers(layers=MEAN_FIELD_LAYERS, iterations_label: str = "repeat T times") -> Figure:
    """One mean-field iteration drawn as a stack of network layers, the learnt ones shaded, with the loop
    back from "adding the unary" to "normalising" that makes the CRF a recurrent network."""
    fig = Figure(figsize=(11.5, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.set_xlim(-1.6, 2.2 * len(layers) + 1.0)
    ax.set_ylim(-1.45, 1.75)
    ax.axis("off")
    centres = [2.2 * k + 0.9 for k in range(len(layers))]
    half_w, half_h = 0.95, 0.55

    def box(x, y, w, h, text, face):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=face, ec="0.3"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)

    def arrow(start, end, **kw):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="0.25", **kw))

    box(-0.9, 0.0, 1.1, 1.1, "unary U\n= -log p\n(network)", "0.93")
    arrow((-0.3, 0.0), (centres[0] - half_w - 0.05, 0.0))
    for k, ((name, what, learnt), x) in enumerate(zip(layers, centres)):
        box(x, 0.0, 2 * half_w, 2 * half_h, f"{name}\n\n{what}", "#ffd9a8" if learnt else "#dfe9f5")
        if k:
            arrow((centres[k - 1] + half_w + 0.05, 0.0), (x - half_w - 0.05, 0.0))
    arrow((centres[-1] + half_w + 0.05, 0.0), (centres[-1] + 1.45, 0.0))
    ax.text(centres[-1] + 1.5, 0.0, "softmax:\nQ after\nT steps", va="center", fontsize=8.5)
    # the recurrence: the new energy goes back to the softmax, T times, with the same weights
    arrow((centres[-1], half_h + 0.1), (centres[0], half_h + 0.1), connectionstyle="arc3,rad=0.18")
    ax.text((centres[0] + centres[-1]) / 2, 1.55, iterations_label + " with the same weights: a recurrent network",
            ha="center", fontsize=8.5)
    # the unary enters every iteration again
    ax.plot([-0.9, -0.9, centres[-1]], [-0.6, -0.95, -0.95], color="0.25", lw=1, ls=(0, (3, 2)))
    arrow((centres[-1], -0.95), (centres[-1], -half_h - 0.1), linestyle=(0, (3, 2)))
    ax.text(-0.8, -1.2, "-U enters every iteration", fontsize=8)
    ax.text(centres[2], -1.35, "shaded: learnt by backpropagation (w1, w2, the compatibility); blue: fixed operations",
            ha="center", fontsize=8.5)
    return fig


def plot_compatibility(matrix, class_names=VOC_CLASSES, title: str = "learnt compatibility",
                       identity_removed: bool = True) -> Figure:
    """A ``C x C`` compatibility (reward) matrix as a heatmap, rows = the label that gains, columns = the label
    whose mass nearby gives it; with ``identity_removed`` the Potts start (the identity) is subtracted,
    so the colours show what training changed."""
    m = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=float)
    shown = m - np.eye(len(m)) if identity_removed else m
    lim = float(np.abs(shown).max()) or 1.0
    fig = Figure(figsize=(7.2, 6.2), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="RdBu_r", vmin=-lim, vmax=lim)
    names = list(class_names)[:len(m)]
    ax.set_xticks(range(len(m)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(m)), names, fontsize=7)
    ax.set_xlabel("label l' nearby")
    ax.set_ylabel("label l that gains (red) or loses (blue)")
    ax.set_title(title + (" minus the Potts start" if identity_removed else ""))
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig

