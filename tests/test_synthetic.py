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


def test_badges_name_the_class_and_the_tint_splits_the_shared_badge():
    from deeplab_lessons.data.synthetic import BADGE_COLOURS, IMAGE_CUE_PAIR, synthesize_scene

    a, b = IMAGE_CUE_PAIR
    assert np.array_equal(BADGE_COLOURS[a], BADGE_COLOURS[b])
    others = [c for c in range(1, 21) if c != b]
    colours = BADGE_COLOURS[others]
    gaps = np.abs(colours[:, None] - colours[None]).max(-1) + 1e3 * np.eye(len(others))
    assert gaps.min() >= 105                                   # 19 badges, any two far apart in some channel
    seen_pair = set()
    for index in range(40):
        image, labels, objects = synthesize_scene(2, index, size=(96, 128), void_width=0)
        bg = image[labels == 0].astype(float).mean(0)
        warm = bg[0] > bg[2]                                   # the tint: red above blue
        for k, obj in enumerate(objects):
            x, y = (int(round(v)) for v in obj["badge"])
            if not (0 <= x < 128 and 0 <= y < 96) or labels[y, x] != obj["label"]:
                continue                                       # badge covered by a later object
            assert np.abs(image[y, x].astype(float) - BADGE_COLOURS[obj["label"]]).max() < 40
            if obj["label"] in IMAGE_CUE_PAIR:
                assert obj["label"] == (a if warm else b)
                seen_pair.add(obj["label"])
    assert seen_pair == {a, b}


def test_relabel_changes_one_badge_and_nothing_else():
    from deeplab_lessons.data.synthetic import synthesize_scene

    image, labels, objects = synthesize_scene(0, 3, size=(96, 128))
    changed, new_labels, new_objects = synthesize_scene(0, 3, size=(96, 128), relabel={0: 5})
    assert new_objects[0]["label"] == 5 and new_objects[1:] == objects[1:]
    ys, xs = np.nonzero((image != changed).any(-1))
    near = np.min([np.hypot(xs - bx, ys - by) for bx, by in objects[0]["badges"]], axis=0)
    assert len(xs) and np.all(near <= objects[0]["badge_radius"] + 1)
    for bx, by in objects[0]["badges"]:                        # every badge of the object is recoloured
        assert (image[int(by), int(bx)] != changed[int(by), int(bx)]).any()
    assert set(np.unique(new_labels[labels != new_labels]).tolist()) <= {5, 255}
    with pytest.raises(ValueError, match="relabel"):
        synthesize_scene(0, 3, size=(96, 128), relabel={0: 0})


def test_every_body_pixel_is_within_reach_of_a_badge():
    from deeplab_lessons.data.synthetic import BADGE_REACH, synthesize_scene

    several = 0
    for size, index in [((192, 256), i) for i in range(24)] + [((96, 128), i) for i in range(24)]:
        _, labels, objects = synthesize_scene(1, index, size=size, void_width=0)
        _, _, single = synthesize_scene(1, index, size=size, void_width=0, badge_reach=None)
        assert [len(o["badges"]) for o in single] == [1] * len(single)
        assert [o["badge"] for o in single] == [o["badge"] for o in objects]
        classes = [o["label"] for o in objects]
        for obj in objects:
            several += len(obj["badges"]) > 1
            if classes.count(obj["label"]) > 1:
                continue                                   # two objects of one class: pixels not attributable
            ys, xs = np.nonzero(labels == obj["label"])
            near = np.min([np.hypot(xs - bx, ys - by) for bx, by in obj["badges"]], axis=0)
            assert near.max() <= max(BADGE_REACH * min(size) / 192, obj["badge_radius"]) + 1.0
    assert several > 0                                     # large bodies do get more than one badge


def test_no_body_pixel_has_a_badge_colour():
    from deeplab_lessons.data.synthetic import BADGE_COLOURS, BODY_BADGE_GAP, synthesize_scene

    yy, xx = np.mgrid[0:96, 0:128]
    closest = []
    for index in range(40):
        image, labels, objects = synthesize_scene(4, index, size=(96, 128), void_width=0)
        in_badge = np.zeros(labels.shape, dtype=bool)
        for obj in objects:
            for bx, by in obj["badges"]:
                in_badge |= np.hypot(xx - bx, yy - by) <= obj["badge_radius"] + 1
        body = (labels > 0) & ~in_badge
        pixels = image[body].astype(float)
        closest.append(np.abs(pixels[:, None] - BADGE_COLOURS[None, 1:]).max(-1).min())
    assert min(closest) >= BODY_BADGE_GAP - 1                  # stripes and shading included
    assert np.median(closest) < 3 * BODY_BADGE_GAP             # ... and bodies are not simply kept far away


def test_colour_carries_no_class(tmp_path):
    """P1: a per-pixel colour lookup fit on train scores val mIoU <= 0.25."""
    from deeplab_lessons.data import ColourLookup
    from deeplab_lessons.metrics import ConfusionMatrix

    voc = make_synthetic_voc(tmp_path, n_train=60, n_val=30, size=(96, 128), seed=4)
    train, val = VOCSegmentation(voc, "train"), VOCSegmentation(voc, "val")
    lookup = ColourLookup().fit((im.permute(1, 2, 0).numpy(), m.numpy()) for im, m in train)
    cm = ConfusionMatrix(21)
    for im, m in val:
        cm.update(lookup.predict(im.permute(1, 2, 0).numpy()), m.numpy())
    assert cm.compute()["mean_iou"] <= 0.25


def test_colour_lookup_is_perfect_where_colour_is_the_class():
    from deeplab_lessons.data import ColourLookup

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(20, 30))
    table = np.array([[10, 10, 10], [200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=np.uint8)
    lookup = ColourLookup(num_classes=4).fit([(table[labels], labels)])
    assert np.array_equal(lookup.predict(table[labels]), labels)
    with pytest.raises(ValueError, match="uint8"):
        lookup.predict(table[labels].astype(float))
    with pytest.raises(ValueError, match="bins"):
        ColourLookup(bins=1)


def test_objects_span_a_wide_range_of_sizes():
    """P3: 95th / 5th percentile of sqrt(object area) >= 4."""
    sizes = []
    for index in range(80):
        _, labels = synthesize_image(0, index)
        for c in set(np.unique(labels).tolist()) - {0, 255}:
            sizes.append(np.sqrt((labels == c).sum()))
    assert np.percentile(sizes, 95) / np.percentile(sizes, 5) >= 4
