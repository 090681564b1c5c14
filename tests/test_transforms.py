"""Joint transforms: nearest-neighbour masks, mean / 255 padding, alignment, determinism."""

import pytest
import torch

from deeplab_lessons.data.transforms import (
    IMAGE_MEAN_UINT8,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    train_transforms,
)


def _pair(height=12, width=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, 21, (height, width), generator=g)
    mask[0, :3] = 255
    image = (mask * 10 % 256).to(torch.uint8).expand(3, height, width).clone()   # image encodes the label
    return image, mask


def test_scale_by_two_is_nearest_for_the_mask():
    image, mask = _pair()
    out_image, out_mask = RandomScale((2.0, 2.0))(image, mask)
    assert out_image.shape == (3, 24, 32) and out_image.dtype == torch.uint8
    assert out_mask.dtype == torch.int64
    assert torch.equal(out_mask, mask.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_random_scale_never_invents_labels():
    image, mask = _pair(31, 37)
    for seed in range(5):
        _, out = RandomScale((0.5, 1.5))(image, mask, torch.Generator().manual_seed(seed))
        assert set(out.unique().tolist()) <= set(mask.unique().tolist())
        scale = out.shape[0] / 31
        assert 0.45 <= scale <= 1.55
        assert out.shape[1] == round(37 * scale) or abs(out.shape[1] / 37 - scale) < 0.05


def test_crop_pads_with_mean_and_ignore():
    image, mask = _pair(10, 12)
    out_image, out_mask = RandomCrop(16)(image, mask)
    assert out_image.shape == (3, 16, 16) and out_mask.shape == (16, 16)
    # only one position is possible: the input at the top-left, padding bottom/right
    assert torch.equal(out_mask[:10, :12], mask) and torch.equal(out_image[:, :10, :12], image)
    assert (out_mask[10:] == 255).all() and (out_mask[:, 12:] == 255).all()
    mean = torch.tensor(IMAGE_MEAN_UINT8, dtype=torch.uint8).view(3, 1)
    assert torch.equal(out_image[:, 10:].reshape(3, -1), mean.expand(3, 6 * 16))


def test_crop_takes_the_same_window_from_image_and_mask():
    height, width = 20, 30
    positions = torch.arange(height * width).view(height, width)
    image = torch.stack([positions % 256, positions // 256, torch.zeros_like(positions)]).to(torch.uint8)
    for seed in range(4):
        out_image, out_mask = RandomCrop(8)(image, positions, torch.Generator().manual_seed(seed))
        top, left = divmod(int(out_mask[0, 0]), width)
        assert torch.equal(out_mask, positions[top:top + 8, left:left + 8])
        assert torch.equal(out_image, image[:, top:top + 8, left:left + 8])


def test_flip():
    image, mask = _pair()
    assert all(torch.equal(a, b) for a, b in zip(RandomHorizontalFlip(1.0)(image, mask), (image.flip(-1), mask.flip(-1))))
    assert all(torch.equal(a, b) for a, b in zip(RandomHorizontalFlip(0.0)(image, mask), (image, mask)))


def test_pipeline_keeps_image_and_mask_aligned_and_is_seeded():
    image, mask = _pair(40, 50)
    pipeline = train_transforms(24, scale_range=None)
    for seed in range(4):
        out_image, out_mask = pipeline(image, mask, torch.Generator().manual_seed(seed))
        labelled = out_mask != 255
        assert torch.equal(out_image[0][labelled], (out_mask[labelled] * 10 % 256).to(torch.uint8))
    a = train_transforms(24)(image, mask, torch.Generator().manual_seed(3))
    b = train_transforms(24)(image, mask, torch.Generator().manual_seed(3))
    c = train_transforms(24)(image, mask, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_bad_arguments():
    image, mask = _pair()
    with pytest.raises(ValueError, match="scale_range"):
        RandomScale((1.5, 0.5))
    with pytest.raises(ValueError, match="crop_size"):
        RandomCrop(0)
    with pytest.raises(ValueError, match="probability"):
        RandomHorizontalFlip(2.0)
    with pytest.raises(ValueError, match="same size"):
        RandomCrop(8)(image, mask[:5])
