"""ipywidgets explorers: thin wrappers that wire sliders to the pure functions in ``viz``.

Each explorer is a class whose callbacks are methods, so tests can set ``slider.value`` and
check what was redrawn; the notebook cell that shows one is a single line.
"""

from __future__ import annotations

import time

import ipywidgets as widgets
from IPython.display import display
from matplotlib.figure import Figure

from . import viz
from .receptive_field import LayerRF, footprint_2d, receptive_fields_from_specs


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
        from .atrous import dilate_kernel
        import torch

        k, r, n = self.kernel_size.value, self.rate.value, self.layers.value
        self.kernel = dilate_kernel(torch.ones(k, k), r).numpy()
        self.footprint = footprint_2d([(k, 1, r)] * n)
        self.field_of_view = receptive_fields_from_specs([(k, 1, r)] * n)[-1].size
        return viz.plot_dilation_stack(k, r, n, fig)
