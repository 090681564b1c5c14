"""ipywidgets explorers: thin wrappers that wire sliders to the pure functions in ``viz``.

Each explorer is a class whose callbacks are methods, so tests can set ``slider.value`` and
check what was redrawn; the notebook cell that shows one is a single line.
"""

from __future__ import annotations

import time

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import Image, display
from matplotlib.figure import Figure

from . import viz
from .config import torch_threads
from .atrous import dilate_kernel
from .receptive_field import LayerRF, footprint_2d, receptive_fields_from_specs

__all__ = ["FigureExplorer", "ReceptiveFieldExplorer", "DilationExplorer", "CRFExplorer"]


class FigureExplorer:
    """Base of the explorers: sliders -> a pure ``viz`` function -> one reused ``Figure``.

    Subclasses build their sliders, pass them to ``__init__`` as ``{attribute: slider}`` and
    implement :meth:`draw` (``fig -> fig``, redrawing in place). Every slider change calls
    :meth:`redraw`, which renders the figure to a PNG and puts it in :attr:`output` (an
    ``ipywidgets.Output``), replacing the previous one; :attr:`redraw_seconds` is how long that
    took. Show it with ``display(explorer)`` or by ending a cell with it; :attr:`widget` is the
    whole box (sliders above, figure below).
    """

    def __init__(self, sliders: dict[str, widgets.ValueWidget], dpi: int = 72):
        self.dpi = dpi
        self.figure: Figure | None = None
        self.redraws = 0
        self.redraw_seconds = float("nan")
        self.output = widgets.Output()
        for name, slider in sliders.items():
            setattr(self, name, slider)
            slider.observe(self._on_change, names="value")
        controls = widgets.HBox(list(sliders.values()), layout=widgets.Layout(flex_flow="row wrap"))
        self.widget = widgets.VBox([controls, self.output])
        self.redraw()

    def draw(self, fig: Figure | None) -> Figure:
        """Redraw ``fig`` (``None`` the first time) from the sliders; return the figure."""
        raise NotImplementedError

    def _on_change(self, change) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Recompute and re-render the figure into :attr:`output`."""
        start = time.perf_counter()
        self.figure = self.draw(self.figure)
        png = viz.figure_png_base64(self.figure, self.dpi)
        self.output.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": {"image/png": png, "text/plain": f"<{type(self).__name__} figure>"}},)
        self.redraws += 1
        self.redraw_seconds = time.perf_counter() - start

    def snapshot(self):
        """A still PNG of the figure as the sliders stand now (``IPython.display.Image``).

        The lessons show one right after each explorer, so a reader without a live kernel (the
        notebook on the web, the HTML of ``make run``) sees the explorer's first state.
        """
        return Image(data=viz.figure_png(self.figure, self.dpi), format="png")

    def _ipython_display_(self) -> None:
        display(self.widget)


def _int_slider(description: str, value: int, low: int, high: int, step: int = 1) -> widgets.IntSlider:
    if not low <= value <= high or (value - low) % step:
        raise ValueError(f"{description} must be in {list(range(low, high + 1, step))}, got {value!r}")
    return widgets.IntSlider(value=value, min=low, max=high, step=step, description=description,
                             continuous_update=False, style={"description_width": "initial"})


class ReceptiveFieldExplorer(FigureExplorer):
    """Lesson 01: the receptive field of a stack of identical layers, redrawn as sliders move.

    Sliders: :attr:`layer` (depth of the unit looked at, 1-4), :attr:`kernel_size` (1-7),
    :attr:`stride` (1-2) and :attr:`dilation` (1-4), shared by every layer of the stack. After
    each redraw :attr:`specs` holds the stack, :attr:`rows` its closed-form
    :class:`~deeplab_lessons.receptive_field.LayerRF` rows and :attr:`footprint` the 2-D path
    counts drawn (see :func:`deeplab_lessons.viz.plot_rf_stack`).
    """

    def __init__(self, layer: int = 3, kernel_size: int = 3, stride: int = 1, dilation: int = 1):
        self.specs: list[tuple[int, int, int]] = []
        self.rows: list[LayerRF] = []
        super().__init__({
            "layer": _int_slider("layer", layer, 1, 4),
            "kernel_size": _int_slider("kernel", kernel_size, 1, 7),
            "stride": _int_slider("stride", stride, 1, 2),
            "dilation": _int_slider("dilation", dilation, 1, 4),
        })

    def draw(self, fig: Figure | None) -> Figure:
        self.specs = [(self.kernel_size.value, self.stride.value, self.dilation.value)] * self.layer.value
        self.rows = receptive_fields_from_specs(self.specs)
        self.footprint = footprint_2d(self.specs)
        return viz.plot_rf_stack(self.specs, fig)


class DilationExplorer(FigureExplorer):
    """Lesson 02: an atrous kernel and a stack of it on an impulse, redrawn as sliders move.

    Sliders: :attr:`rate` (dilation rate, 1-8), :attr:`kernel_size` (odd, 1-7) and
    :attr:`layers` (how many such layers are stacked, 1-4). After each redraw :attr:`kernel` is
    the zero-inserted kernel picture's taps (1 = weight, 0 = hole), :attr:`footprint` the stack's
    impulse response (path counts) and :attr:`field_of_view` its side in pixels,
    ``layers * (kernel_size - 1) * rate + 1`` (see :func:`deeplab_lessons.viz.plot_dilation_stack`).
    """

    def __init__(self, rate: int = 2, kernel_size: int = 3, layers: int = 2):
        super().__init__({
            "rate": _int_slider("rate", rate, 1, 8),
            "kernel_size": _int_slider("kernel", kernel_size, 1, 7, step=2),
            "layers": _int_slider("layers", layers, 1, 4),
        })

    def draw(self, fig: Figure | None) -> Figure:
        k, r, n = self.kernel_size.value, self.rate.value, self.layers.value
        self.kernel = dilate_kernel(torch.ones(k, k), r).numpy()
        self.footprint = footprint_2d([(k, 1, r)] * n)
        self.field_of_view = receptive_fields_from_specs([(k, 1, r)] * n)[-1].size
        return viz.plot_dilation_stack(k, r, n, fig)


# ============================================================================================
# Dense CRF (lesson 06)
# ============================================================================================



def _float_slider(description: str, value: float, low: float, high: float, step: float) -> widgets.FloatSlider:
    if not low <= value <= high:
        raise ValueError(f"{description} must be in [{low}, {high}], got {value!r}")
    return widgets.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                               continuous_update=False, style={"description_width": "initial"})


class CRFExplorer(FigureExplorer):
    """Lesson 06: the dense CRF re-run on one image as its parameters move.

    ``image``: ``H x W x 3`` uint8; ``probs``: ``[C, H, W]`` softmax probabilities at the image's
    resolution (numpy or torch); ``target``: optional ground-truth ``[H, W]`` (255 = void),
    drawn as a last panel and used to print pixel accuracy. Sliders (pydensecrf's names):
    :attr:`bi_w` (w1), :attr:`bi_xy_std` (theta_alpha, px), :attr:`bi_rgb_std` (theta_beta),
    :attr:`pos_w` (w2), :attr:`pos_xy_std` (theta_gamma, px) and :attr:`iterations`.

    The CRF is a :class:`~deeplab_lessons.crf.DenseCRF` bound to the image (pass ``crf`` to share
    one): moving a weight or the iteration count reuses the permutohedral lattices already built;
    moving a width builds that kernel's lattice once (then cached, a few kept). After each redraw
    :attr:`params` is the :class:`~deeplab_lessons.crf.CRFParams` used, :attr:`marginals` the
    ``[C, H, W]`` result, :attr:`labels` its argmax, :attr:`crf_seconds` the CRF's share of
    :attr:`redraw_seconds`, and ``crf.lattice_builds`` counts lattice constructions.
    ``num_threads`` (default 1) is the torch thread count during a redraw (``None``: unchanged):
    a redraw is latency-bound, and one thread is the robust choice on a shared 2-core machine.
    """

    def __init__(self, image, probs, target=None, params=None, crf=None, dpi: int = 72,
                 num_threads: int | None = 1):
        from .crf import CRFParams, DenseCRF, check_probs, unary_from_probs

        params = params if params is not None else CRFParams()
        self.image = np.asarray(image)
        self.crf = crf if crf is not None else DenseCRF(self.image)
        probs = check_probs(probs, self.crf.image)[0]
        self.unary = unary_from_probs(probs.to(self.crf.device, torch.float32), classes_last=True)
        self.before = probs.argmax(dim=0).cpu().numpy()
        self.target = None if target is None else np.asarray(target)
        self.params = params
        self.marginals = None
        self.labels = None
        self.crf_seconds = float("nan")
        self.num_threads = num_threads
        super().__init__({
            "bi_w": _float_slider("w1 (bi_w)", params.bi_w, 0.0, 20.0, 0.5),
            "bi_xy_std": _float_slider("θα (bi_xy_std)", params.bi_xy_std, 5.0, 200.0, 1.0),
            "bi_rgb_std": _float_slider("θβ (bi_rgb_std)", params.bi_rgb_std, 1.0, 40.0, 0.5),
            "pos_w": _float_slider("w2 (pos_w)", params.pos_w, 0.0, 20.0, 0.5),
            "pos_xy_std": _float_slider("θγ (pos_xy_std)", params.pos_xy_std, 0.5, 20.0, 0.5),
            "iterations": _int_slider("iterations", int(params.iterations), 0, 20),
        }, dpi=dpi)

    def current_params(self):
        """The :class:`~deeplab_lessons.crf.CRFParams` the sliders show now."""
        from .crf import CRFParams

        return CRFParams(pos_w=self.pos_w.value, pos_xy_std=self.pos_xy_std.value, bi_w=self.bi_w.value,
                         bi_xy_std=self.bi_xy_std.value, bi_rgb_std=self.bi_rgb_std.value,
                         iterations=self.iterations.value)

    def _accuracy(self, labels: np.ndarray) -> str:
        if self.target is None:
            return ""
        scored = self.target != 255
        return f"\npixel acc. {(labels[scored] == self.target[scored]).mean():.1%}"

    def draw(self, fig: Figure | None) -> Figure:
        start = time.perf_counter()

        self.params = self.current_params()
        with torch.no_grad(), torch_threads(self.num_threads):
            self.marginals = self.crf(unary=self.unary, params=self.params)[0]
        self.labels = self.marginals.argmax(dim=0).cpu().numpy()
        self.crf_seconds = time.perf_counter() - start
        p = self.params
        maps = [self.before, self.labels] + ([self.target] if self.target is not None else [])
        titles = ["image", "network (argmax)" + self._accuracy(self.before),
                  f"CRF: w1={p.bi_w:g} θα={p.bi_xy_std:g} θβ={p.bi_rgb_std:g}\n"
                  f"w2={p.pos_w:g} θγ={p.pos_xy_std:g}, {p.iterations} it." + self._accuracy(self.labels)]
        titles += ["ground truth"] if self.target is not None else []
        return viz.plot_label_maps(self.image, maps, titles, fig, legend_from=maps[1:])
