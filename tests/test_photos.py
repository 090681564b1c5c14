"""The real photographs of lessons 06 and 07 (scikit-image's sample images) and the stride-8-like coarse prediction."""

import numpy as np
import pytest
import torch

from deeplab_lessons.crf import dense_crf
from deeplab_lessons.data.photos import PHOTOS, ellipse_mask, load_photo, stride_probs


def test_photos_load_offline_as_uint8_rgb():
    for name in PHOTOS:
        photo = load_photo(name)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3 and photo.std() > 20
    with pytest.raises(ValueError, match="photo must be one of"):
        load_photo("lena")


def test_stride_probs_is_constant_inside_blocks_far_from_the_edge_and_sums_to_one():
    mask = ellipse_mask((64, 96), (32, 48), (20, 30))
    assert mask[32, 48] and not mask[0, 0] and mask.sum() == pytest.approx(np.pi * 20 * 30, rel=0.05)
    probs = stride_probs(mask, 8, confidence=0.8)
    torch.testing.assert_close(probs.sum(0), torch.ones(64, 96))
    assert probs[8, 32, 48] == pytest.approx(0.8, abs=3e-3) and probs[0, 0, 0] == pytest.approx(0.8, abs=3e-3)
    # the coarse boundary is smooth: a blend between the two, never sharper than a stride-8 network could make it
    row = probs[8, 32].numpy()
    assert (np.diff(row) >= -1e-6).sum() > 0 and row.min() > 0.19 and row.max() < 0.81
    with pytest.raises(ValueError):
        stride_probs(mask, 0)
    with pytest.raises(ValueError):
        stride_probs(mask, 8, confidence=0.4)


def test_the_crf_moves_a_rough_outline_onto_the_photo_and_keeps_the_interior():
    photo = load_photo("chelsea")
    rough = ellipse_mask(photo.shape[:2], (165, 190), (185, 190))
    probs = stride_probs(rough, 8)
    before, after = probs.argmax(0).numpy(), dense_crf(photo, probs).argmax(0).numpy()
    changed = before != after
    assert 0.01 < changed.mean() < 0.3
    assert not changed[100:200, 150:250].any()              # the cat's face, deep inside the outline
