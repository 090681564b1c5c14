"""The embedded data set: VOC 2012 layout, palette PNGs, void bands, determinism."""

import json
import threading

import numpy as np
import pytest
from PIL import Image

from deeplab_lessons.data import (VOC_CLASSES, VOC_PALETTE, VOCSegmentation, ensure_embedded_voc,
                                  make_synthetic_voc, synthesize_image)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp("syn"), n_train=6, n_val=3, size=(64, 96), seed=3)


def test_palette_is_the_devkit_colour_map():
    # labelcolormap.m: first entries and the void colour
    assert VOC_PALETTE[0].tolist() == [0, 0, 0]
    assert VOC_PALETTE[1].tolist() == [128, 0, 0]
    assert VOC_PALETTE[15].tolist() == [192, 128, 128]   # person
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[15] == "person"


def test_layout_is_voc2012(voc):
    assert voc.parts[-2:] == ("VOCdevkit", "VOC2012")
    splits = {s: (voc / "ImageSets/Segmentation" / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval")}
    assert len(splits["train"]) == 6 and len(splits["val"]) == 3
    assert splits["trainval"] == splits["train"] + splits["val"]
    assert not set(splits["train"]) & set(splits["val"])
    for name in splits["trainval"]:
        with Image.open(voc / "JPEGImages" / f"{name}.jpg") as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (96, 64)
        with Image.open(voc / "SegmentationClass" / f"{name}.png") as mask:
            assert mask.format == "PNG" and mask.mode == "P" and mask.size == (96, 64)
            assert np.array_equal(np.array(mask.getpalette()[:768]).reshape(256, 3), VOC_PALETTE)


def test_masks_have_objects_and_void_bands(voc):
    ds = VOCSegmentation(voc, "trainval")
    seen = set()
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.dtype.__str__() == "torch.uint8" and image.shape == (3, 64, 96)
        assert mask.shape == (64, 96)
        labels = set(mask.unique().tolist())
        assert 0 in labels and 255 in labels and labels - {0, 255}, labels
        assert labels <= set(range(21)) | {255}
        seen |= labels
        # every void pixel touches a label change: it lies within 1 px of two different labels
        m = mask.numpy()
        void = np.argwhere(m == 255)
        r, c = void[len(void) // 2]
        window = m[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3]
        assert len(set(window.flatten().tolist()) - {255}) >= 1
    assert len(seen - {0, 255}) >= 3   # several classes across the set


def test_object_edges_are_colour_edges():
    image, labels = synthesize_image(seed=0, index=1, size=(96, 128), void_width=0)
    img = image.astype(float)
    horizontal_change = labels[:, 1:] != labels[:, :-1]
    step = np.abs(img[:, 1:] - img[:, :-1]).sum(-1)
    # colour steps across object boundaries are much larger than inside regions
    assert step[horizontal_change].mean() > 3 * step[~horizontal_change].mean()


def test_deterministic_for_a_seed(tmp_path):
    a = make_synthetic_voc(tmp_path / "a", n_train=2, n_val=1, size=(48, 48), seed=7)
    b = make_synthetic_voc(tmp_path / "b", n_train=2, n_val=1, size=(48, 48), seed=7)
    c = make_synthetic_voc(tmp_path / "c", n_train=2, n_val=1, size=(48, 48), seed=8)
    for name in (a / "ImageSets/Segmentation/train.txt").read_text().split():
        assert (a / "JPEGImages" / f"{name}.jpg").read_bytes() == (b / "JPEGImages" / f"{name}.jpg").read_bytes()
        assert (a / "SegmentationClass" / f"{name}.png").read_bytes() == (b / "SegmentationClass" / f"{name}.png").read_bytes()
    name = (a / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    assert (a / "JPEGImages" / f"{name}.jpg").read_bytes() != (c / "JPEGImages" / f"{name}.jpg").read_bytes()


@pytest.mark.parametrize("kwargs, match", [
    ({"n_train": 0}, "n_train"), ({"size": (16, 64)}, "size"), ({"classes": (0, 3)}, "classes"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_voc(tmp_path, **kwargs)


def test_ensure_embedded_is_idempotent_and_race_safe(tmp_path):
    args = dict(n_train=3, n_val=2, size=(40, 40), seed=1)
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_embedded_voc(tmp_path, **args))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(set(results)) == 1
    voc = results[0]
    marker = json.loads((voc / "SYNTHETIC").read_text())
    assert marker["n_train"] == 3 and marker["size"] == [40, 40]
    before = (voc / "SYNTHETIC").stat().st_mtime_ns
    assert ensure_embedded_voc(tmp_path, **args) == voc
    assert (voc / "SYNTHETIC").stat().st_mtime_ns == before          # not regenerated
    assert not list(tmp_path.glob(".tmp-*"))                          # no leftovers
    # other parameters: the stale set is replaced
    voc2 = ensure_embedded_voc(tmp_path, n_train=4, n_val=2, size=(40, 40), seed=1)
    assert len((voc2 / "ImageSets/Segmentation/train.txt").read_text().split()) == 4


def test_ensure_embedded_refuses_to_overwrite_real_voc(tmp_path):
    real = tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages"
    real.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not the embedded one"):
        ensure_embedded_voc(tmp_path, n_train=2, n_val=1, size=(40, 40))


def test_each_class_has_its_own_saturated_colour_and_backgrounds_are_grey():
    from deeplab_lessons.data.synthetic import CLASS_COLOURS

    colours = CLASS_COLOURS[1:]
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1) + 1e3 * np.eye(20)
    assert gaps.min() > 40                                   # any two classes differ by > 40 RGB levels
    assert (colours.max(1) - colours.min(1)).min() > 90      # every class colour is saturated
    image, labels = synthesize_image(seed=0, index=4, size=(96, 128), void_width=1)
    pixels = image.astype(float)
    chroma = pixels.max(-1) - pixels.min(-1)
    assert np.median(chroma[labels == 0]) < 40               # the background is nearly grey
    for c in set(np.unique(labels).tolist()) - {0, 255}:
        mean = pixels[labels == c].mean(0)
        assert np.linalg.norm(mean - CLASS_COLOURS[c]) < 25, (c, mean, CLASS_COLOURS[c])
