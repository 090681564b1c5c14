"""Lessons 01-02 plots and explorers: sliders drive the pure functions, the figure is redrawn."""

from __future__ import annotations

import base64

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402

from deeplab_lessons import viz  # noqa: E402
from deeplab_lessons.receptive_field import (footprint_2d, gradient_receptive_field,  # noqa: E402
                                             receptive_fields)
from deeplab_lessons.widgets import DilationExplorer, ReceptiveFieldExplorer  # noqa: E402


def _png(explorer) -> bytes:
    (output,) = explorer.output.outputs
    png = base64.b64decode(output["data"]["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return png


def test_receptive_field_explorer_follows_its_sliders():
    explorer = ReceptiveFieldExplorer()
    assert (explorer.layer.value, explorer.kernel_size.value, explorer.stride.value,
            explorer.dilation.value) == (3, 3, 1, 1)
    assert explorer.rows[-1].size == 7 and explorer.redraws == 1
    first = _png(explorer)

    explorer.kernel_size.value = 5
    assert explorer.rows[-1].size == 1 + 3 * 4 and explorer.redraws == 2
    explorer.stride.value = 2
    assert [r.size for r in explorer.rows] == [5, 13, 29] and explorer.rows[-1].jump == 8
    explorer.dilation.value = 2
    explorer.layer.value = 4
    assert explorer.specs == [(5, 2, 2)] * 4
    assert explorer.rows[-1].size == 1 + 8 * (1 + 2 + 4 + 8) and explorer.redraws == 5
    np.testing.assert_array_equal(explorer.footprint, footprint_2d(explorer.specs))
    # the figure shows that footprint: the right panel's image is log(1 + paths)
    image = explorer.figure.axes[1].images[0].get_array()
    np.testing.assert_allclose(image, np.log1p(explorer.footprint))
    assert "121 x 121" in explorer.figure._suptitle.get_text()
    assert _png(explorer) != first
    assert explorer.redraw_seconds < 3.0  # target 0.2 s idle; generous for a loaded CI machine


def test_dilation_explorer_follows_its_sliders():
    explorer = DilationExplorer()
    assert (explorer.rate.value, explorer.kernel_size.value, explorer.layers.value) == (2, 3, 2)
    assert explorer.field_of_view == 9
    explorer.rate.value = 4
    assert explorer.field_of_view == 2 * 2 * 4 + 1 and explorer.kernel.shape == (9, 9)
    assert int(explorer.kernel.sum()) == 9  # 3x3 weights, the rest holes
    # gridding: two layers at rate 4 see 1 pixel in 16 of their field
    assert (explorer.footprint > 0).mean() == pytest.approx(25 / 17 ** 2)
    explorer.layers.value = 1
    explorer.kernel_size.value = 5
    assert explorer.field_of_view == 17 and explorer.footprint.shape == (17, 17)
    assert "17 px" in explorer.figure.axes[1].get_title()
    explorer.rate.value = 1
    assert (explorer.footprint > 0).all() and explorer.redraws == 5
    _png(explorer)


def test_explorers_reject_bad_settings_and_do_not_leak_figures():
    with pytest.raises(ValueError, match="kernel"):
        DilationExplorer(kernel_size=4)
    with pytest.raises(ValueError, match="rate"):
        DilationExplorer(rate=0)
    with pytest.raises(ValueError, match="stride"):
        ReceptiveFieldExplorer(stride=5)
    with pytest.raises(ValueError, match="odd"):
        viz.plot_dilation_stack(4, 2, 1)
    before = plt.get_fignums()
    explorer = DilationExplorer()
    figure = explorer.figure
    for rate in range(1, 9):
        explorer.rate.value = rate
    assert explorer.figure is figure and plt.get_fignums() == before  # one figure, reused


def test_dilated_kernel_picture():
    picture = viz.dilated_kernel_cells(3, 2, cell=4)
    assert picture.shape == (21, 21)
    centres = picture[2::4, 2::4]  # one sample inside each cell
    np.testing.assert_array_equal(centres, np.array([[1, 0, 1, 0, 1], [0] * 5,
                                                               [1, 0, 1, 0, 1], [0] * 5,
                                                               [1, 0, 1, 0, 1]]))
    assert (picture[0] == 0.5).all() and (picture[:, -1] == 0.5).all()


def test_fields_on_image_and_gradient_figure():
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(2, 2, 5, padding=2))
    rows = receptive_fields(net, input_size=(30, 40))
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    fig = viz.plot_fields_on_image(image, rows, point=(15, 20), labels=["a", "b", "c"])
    squares = [p for p in fig.axes[0].patches]
    assert [round(p.get_width()) for p in squares] == [r.size for r in rows] == [3, 4, 12]
    # the last layer's unit nearest (15, 20): index round((20 - 0.5) / 2) = 10, centred at 20.5
    assert squares[-1].get_x() + squares[-1].get_width() / 2 == pytest.approx(20.5)

    torch.manual_seed(0)
    grad = gradient_receptive_field(net, (30, 40), (7, 10))
    fig = viz.plot_gradient_field(grad, rows[-1], (7, 10), effective_size=5)
    red = fig.axes[0].patches[0]
    assert (red.get_width(), red.get_height()) == (12, 12)
    assert len(fig.axes[0].patches) == 2 and len(viz.figure_png(fig)) > 1000
    fig = viz.plot_maps([torch.zeros(4, 6), np.ones((8, 12))], ["strided", "dense"])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["strided\n4 x 6", "dense\n8 x 12"]
    with pytest.raises(ValueError, match="titles"):
        viz.plot_maps([np.zeros((2, 2))], ["a", "b"])


def test_snapshot_is_a_still_of_the_current_state():
    explorer = DilationExplorer()
    first = explorer.snapshot()
    assert first.data[:8] == b"\x89PNG\r\n\x1a\n" and first.format == "png"
    shown = base64.b64decode(explorer.output.outputs[0]["data"]["image/png"])
    assert first.data == shown                                   # the figure the widget shows now
    explorer.rate.value = explorer.rate.value + 1
    assert explorer.snapshot().data != first.data
