"""Trimap (boundary band) evaluation of DeepLab v1 (Sec. 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deeplab_lessons.crf import boundary_pixels, trimap_band, trimap_scores


def square_target(size: int = 21, lo: int = 5, hi: int = 15, void: bool = False) -> np.ndarray:
    target = np.zeros((size, size), dtype=np.int64)
    target[lo:hi, lo:hi] = 3
    if void:                                   # a VOC-style void ring around the object
        ring = np.zeros_like(target, dtype=bool)
        ring[lo - 1:hi + 1, lo - 1:hi + 1] = True
        ring[lo + 1:hi - 1, lo + 1:hi - 1] = False
        target[ring] = 255
    return target


def test_boundary_pixels_of_a_square():
    edges = boundary_pixels(square_target()).numpy()
    # inner ring of the square (10x10 -> 36 px) and outer ring just outside it (12x12 -> 44 px)
    assert edges.sum() == 36 + 44
    assert edges[5, 5] and edges[4, 4] and not edges[10, 10] and not edges[0, 0]


def test_band_grows_as_a_chessboard_dilation():
    target = square_target(size=41, lo=15, hi=25)
    sizes = [int(trimap_band(target, w).sum()) for w in range(4)]
    # boundary rings: squares of side 10-2w (inside) and 12+2w (outside) around the 10x10 object
    expected = [(12 + 2 * w) ** 2 - max(10 - 2 * (w + 1), 0) ** 2 for w in range(4)]
    assert sizes == expected


def test_band_equals_a_naive_square_dilation_on_random_masks():
    """The distance transform against the definition: every pixel within a (2w+1)-square of a boundary pixel."""
    rng = np.random.default_rng(0)
    for k in range(12):
        coarse = rng.integers(0, 4, size=(6, 8))
        target = np.kron(coarse, np.ones((7 + k % 3, 9), dtype=np.int64))
        target[rng.random(target.shape) < 0.02] = 255
        edges = boundary_pixels(target).numpy()
        rows, cols = np.nonzero(edges)
        for w in (0, 1, 3, 8, 30):
            naive = np.zeros_like(edges)
            for r, c in zip(rows, cols):
                naive[max(0, r - w):r + w + 1, max(0, c - w):c + w + 1] = True
            assert np.array_equal(trimap_band(target, w).numpy(), naive & (target != 255)), (k, w)
    assert not trimap_band(np.zeros((9, 9), dtype=np.int64), 4).any()       # no boundary at all


def test_void_is_never_in_the_band():
    target = square_target(void=True)
    for w in (0, 2, 10):
        band = trimap_band(target, w).numpy()
        assert not band[target == 255].any()
    assert trimap_band(target, 0).sum() > 0          # pixels touching the void ring are boundary


def test_scores_perfect_and_shifted_predictions():
    target = square_target(size=41, lo=15, hi=25)
    perfect = trimap_scores([target], [target], widths=[0, 3, 40], num_classes=4)
    assert all(perfect[w]["pixel_accuracy"] == 1.0 and perfect[w]["mean_iou"] == 1.0 for w in (0, 3, 40))
    assert perfect[40]["pixels"] == 41 * 41
    shifted = np.roll(target, 2, axis=1)             # a prediction off by 2 px: errors only near edges
    scores = trimap_scores([torch.from_numpy(shifted)], [target], widths=[0, 2, 40], num_classes=4)
    assert scores[0]["pixel_accuracy"] < scores[2]["pixel_accuracy"] < scores[40]["pixel_accuracy"]
    wrong = 4 * 10                                   # 2 columns on each side of the 10-px-tall square
    assert math.isclose(scores[40]["pixel_accuracy"], 1 - wrong / (41 * 41))


def test_bad_width_and_shapes():
    target = square_target()
    with pytest.raises(ValueError, match="width"):
        trimap_band(target, -1)
    with pytest.raises(ValueError, match="differ"):
        trimap_scores([target[:-1]], [target], widths=[1], num_classes=4)
    with pytest.raises(ValueError, match="H, W"):
        boundary_pixels(target[None])
