"""ConfusionMatrix against hand-computed matrices, with ignored pixels and absent classes."""

import math

import numpy as np
import pytest
import torch

from deeplab_lessons.metrics import ConfusionMatrix


def test_hand_computed_matrix_and_scores():
    # truth / prediction on 8 pixels (one ignored), 3 classes
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(num_classes=3, ignore_index=255)
    cm.update(pred, target)
    expected = torch.tensor([[1, 1, 0],    # truth 0: one right, one called 1
                             [0, 3, 0],    # truth 1: all three right
                             [1, 0, 1]])   # truth 2: one right, one called 0
    assert torch.equal(cm.matrix, expected)
    s = cm.compute()
    # IoU_c = n_cc / (row_c + col_c - n_cc)
    iou = [1 / (2 + 2 - 1), 3 / (3 + 4 - 3), 1 / (2 + 1 - 1)]
    np.testing.assert_allclose(s["iou"], iou)
    assert s["mean_iou"] == pytest.approx(np.mean(iou))
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)
    assert s["mean_accuracy"] == pytest.approx(np.mean([1 / 2, 3 / 3, 1 / 2]))


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(num_classes=4, ignore_index=255)
    cm.update(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]))
    s = cm.compute()
    assert math.isnan(s["iou"][2]) and math.isnan(s["iou"][3])
    assert s["mean_iou"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    # a class predicted but absent from the truth has union > 0 and IoU 0: it counts
    cm.update(torch.tensor([3]), torch.tensor([0]))
    s = cm.compute()
    assert s["iou"][3] == 0.0
    assert s["mean_iou"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)
    assert s["mean_accuracy"] == pytest.approx((1 / 2 + 1 / 2) / 2)   # recall over classes in the truth


def test_dataset_wide_matrix_differs_from_per_image_mean():
    # image 1: a tiny object missed entirely; image 2: a large object found exactly
    cm = ConfusionMatrix(num_classes=2)
    per_image = []
    for pred, target in [(torch.zeros(10, dtype=torch.long), torch.tensor([1] + [0] * 9)),
                         (torch.tensor([1] * 5 + [0] * 5), torch.tensor([1] * 5 + [0] * 5))]:
        cm.update(pred, target)
        single = ConfusionMatrix(num_classes=2)
        single.update(pred, target)
        per_image.append(single.compute()["mean_iou"])
    # dataset-wide: class 0 -> 14/15, class 1 -> 5/6
    assert cm.compute()["mean_iou"] == pytest.approx((14 / 15 + 5 / 6) / 2)
    assert np.mean(per_image) == pytest.approx(((9 / 10 + 0) / 2 + 1.0) / 2)
    assert cm.compute()["mean_iou"] != pytest.approx(np.mean(per_image))


def test_matches_a_naive_loop_on_random_maps():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (3, 17, 19), generator=g)
    target[target == 5] = 255
    pred = torch.randint(0, 5, (3, 17, 19), generator=g)
    cm = ConfusionMatrix(num_classes=5)
    cm.update(pred, target)
    naive = np.zeros((5, 5), dtype=np.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if t != 255:
            naive[t, p] += 1
    np.testing.assert_array_equal(cm.matrix.numpy(), naive)


def test_update_accumulates_merge_and_reset():
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(np.array([0, 1]), np.array([0, 2]))
    b.update(np.array([2]), np.array([2]))
    a.merge(b)
    assert int(a.matrix.sum()) == 3 and int(a.matrix[2, 2]) == 1 and int(a.matrix[2, 1]) == 1
    a.reset()
    assert int(a.matrix.sum()) == 0
    assert math.isnan(a.compute()["mean_iou"])


def test_bad_input_is_reported():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="target holds labels outside 0..2"):
        cm.update(torch.zeros(2), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="pred holds class indices outside"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)
