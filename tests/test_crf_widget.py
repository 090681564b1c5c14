"""The CRF explorer: sliders re-run the CRF on the cached lattice and redraw."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab_lessons.crf import CRFParams, dense_crf
from deeplab_lessons.data import synthesize_image
from deeplab_lessons.viz import plot_label_maps, plot_trimap_curves
from deeplab_lessons.widgets import CRFExplorer


@pytest.fixture(scope="module")
def case():
    image, labels = synthesize_image(0, 3, size=(48, 64))
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (4, 48, 64))
    truth = np.where(labels == 255, 0, labels) % 4
    logits[truth, np.arange(48)[:, None], np.arange(64)] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(0)
    return image, probs.astype(np.float32), np.where(labels == 255, 255, truth)


def test_explorer_redraws_with_the_sliders_and_reuses_the_lattice(case):
    image, probs, target = case
    ex = CRFExplorer(image, probs, target)
    assert ex.redraws == 1 and ex.crf.lattice_builds == 2
    first = ex.output.outputs[0]["data"]["image/png"]
    ex.bi_w.value = 8.0
    ex.iterations.value = 3
    ex.pos_w.value = 0.0
    assert ex.redraws == 4 and ex.crf.lattice_builds == 2          # weights/iterations: no rebuild
    assert ex.params == CRFParams(bi_w=8.0, pos_w=0.0, iterations=3)
    np.testing.assert_array_equal(ex.labels, dense_crf(image, probs, ex.params).argmax(0))
    assert ex.output.outputs[0]["data"]["image/png"] != first
    ex.bi_rgb_std.value = 9.0                                        # a width: one new lattice
    assert ex.crf.lattice_builds == 3
    assert ex.crf_seconds <= ex.redraw_seconds


def test_explorer_rejects_mismatched_probs(case):
    image, probs, _ = case
    with pytest.raises(ValueError, match="disagree"):
        CRFExplorer(image, probs[:, :-1])


def test_label_maps_and_trimap_figures(case):
    image, probs, target = case
    fig = plot_label_maps(image, [probs.argmax(0), target], ["image", "argmax", "truth"])
    assert len(fig.axes) == 3
    same = plot_label_maps(image, [target, target], ["a", "b", "c"], fig)
    assert same is fig
    with pytest.raises(ValueError, match="titles"):
        plot_label_maps(image, [target], ["only one"])
    fig = plot_trimap_curves([0, 5, 10], {"before": [50, 60, 70], "after": [55, 64, 72]})
    assert len(fig.axes[0].lines) == 2
