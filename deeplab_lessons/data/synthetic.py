"""The embedded data set: a procedurally generated PASCAL VOC 2012 look-alike.

Nothing can be downloaded in the lessons' default setting, so :func:`make_synthetic_voc` writes
a data set in *exactly* the VOC 2012 layout, read by the same :class:`VOCSegmentation` as the
real thing::

    VOCdevkit/VOC2012/
        JPEGImages/<id>.jpg                     RGB JPEG
        SegmentationClass/<id>.png              palette PNG (VOC palette), 255 = void band
        ImageSets/Segmentation/{train,val,trainval}.txt
        SYNTHETIC                               marker: how the set was generated (JSON)

Each image holds 1-4 objects of VOC classes over a textured, nearly grey background, at
varied scales and overlapping (later objects occlude earlier ones). Every class has its own
look: a saturated colour (:data:`CLASS_COLOURS`, at least 105 levels apart in some channel)
and one of five shapes, with a little texture and grain. The backgrounds are low in chroma, so
an object differs from its surroundings in colour while a pixel's class still takes some
context to be sure of: shading, grain and JPEG compression blur the shades together near edges.
Object edges are colour edges, so the fully connected CRF can snap a coarse stride-8
prediction to them; a void band (label 255) runs along every object contour, as in VOC. The
set is deterministic for a seed: image ``i`` depends only on ``(seed, i)``.

The masks use the VOC colour map like the real data; the *image* colours are the table's,
chosen to be told apart by a small network trained for three minutes on a CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .palette import VOC_CLASSES, VOC_PALETTE

#: Bumped whenever the generator's output changes, so stale sets are regenerated.
GENERATOR_VERSION = 2

_SHAPES = ("ellipse", "rectangle", "triangle", "star", "blob")

#: Object radius as a fraction of the image's short side (objects cover about 35% of the pixels).
OBJECT_RADIUS = (0.16, 0.45)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a random ``cells x cells`` grid upsampled bicubically."""
    grid = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC)
    return np.clip(np.asarray(img), -1.0, 1.0)


def _shape_polygon(rng: np.random.Generator, shape: str, cx: float, cy: float, r: float) -> list:
    """Vertices of a polygonal shape of radius ``r`` around (cx, cy), randomly rotated."""
    angle0 = rng.uniform(0, 2 * np.pi)
    if shape == "triangle":
        radii, n = np.full(3, r), 3
    elif shape == "star":
        n = 2 * int(rng.integers(4, 7))
        radii = np.where(np.arange(n) % 2 == 0, r, r * rng.uniform(0.4, 0.6))
    else:  # blob: an irregular polygon with many vertices
        n = 14
        radii = r * (1 + 0.35 * _smooth_noise(rng, 1, n, 4)[0])
    angles = angle0 + np.arange(n) * 2 * np.pi / n
    return [(float(cx + rad * np.cos(a)), float(cy + rad * np.sin(a))) for rad, a in zip(radii, angles)]


def _draw_object(rng, draw_img, draw_lbl, label: int, shape: str, height: int, width: int) -> None:
    """Draw one object of class ``label`` into the image and the label map."""
    short = min(height, width)
    r = short * rng.uniform(*OBJECT_RADIUS)                   # varied scales
    cx = rng.uniform(0.1, 0.9) * width
    cy = rng.uniform(0.1, 0.9) * height
    if shape in ("ellipse", "rectangle"):
        aspect = rng.uniform(0.55, 1.8)
        box = [cx - r * aspect, cy - r / aspect, cx + r * aspect, cy + r / aspect]
        getattr(draw_img, shape)(box, fill=255)
        getattr(draw_lbl, shape)(box, fill=label)
    else:
        poly = _shape_polygon(rng, shape, cx, cy, r)
        draw_img.polygon(poly, fill=255)
        draw_lbl.polygon(poly, fill=label)


def _class_colours() -> np.ndarray:
    """RGB [21, 3] float: 20 colours of the lattice {30, 140, 245}^3, greys and the darkest left out.

    Any two classes differ by at least 105 levels in one channel and every colour is saturated,
    while the backgrounds stay near the grey diagonal.
    """
    levels = (30.0, 140.0, 245.0)
    lattice = [(r, g, b) for r in levels for g in levels for b in levels if not r == g == b]
    lattice.sort(key=lambda rgb: (-sum(rgb), rgb))           # brightest first; drop the 4 darkest
    colours = np.zeros((len(VOC_CLASSES), 3), dtype=np.float32)
    colours[1:] = np.asarray(lattice[:len(VOC_CLASSES) - 1], dtype=np.float32)
    return colours


#: The colour every object of a class is drawn in (row = class index; row 0 unused).
CLASS_COLOURS = _class_colours()


def _object_colour(rng: np.random.Generator, label: int) -> np.ndarray:
    """The class's colour, jittered per object."""
    return np.clip(CLASS_COLOURS[label] + rng.normal(0, 6, size=3), 0, 255)


def synthesize_image(seed: int, index: int, size: tuple[int, int] = (192, 256),
                     classes: tuple[int, ...] = tuple(range(1, 21)), void_width: int = 1,
                     max_objects: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One (image, label) pair: uint8 RGB [H, W, 3] and uint8 labels [H, W] (255 = void band).

    ``void_width`` pixels on each side of every object contour are set to 255 (VOC's band is
    about 5 px wide in total on 500x375 images).
    """
    height, width = size
    rng = np.random.default_rng([seed, index])

    # Background: a nearly grey tone of random brightness and tint, low-frequency shading, grain.
    bg = rng.uniform(55, 200) + rng.uniform(-14, 14, size=3).astype(np.float32)
    shade = _smooth_noise(rng, height, width, int(rng.integers(3, 7)))[..., None]
    image = bg + 35.0 * shade + rng.normal(0, 7, size=(height, width, 3))
    labels = np.zeros((height, width), dtype=np.uint8)

    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.choice(classes))
        shape = _SHAPES[label % len(_SHAPES)]
        obj = Image.new("L", (width, height), 0)
        lbl = Image.fromarray(labels)
        _draw_object(rng, ImageDraw.Draw(obj), ImageDraw.Draw(lbl), label, shape, height, width)
        inside = np.asarray(obj) > 0
        if not inside.any():
            continue
        labels = np.asarray(lbl).copy()
        texture = 10.0 * _smooth_noise(rng, height, width, int(rng.integers(6, 14)))[..., None]
        colour = _object_colour(rng, label) + texture + rng.normal(0, 5, size=(height, width, 3))
        image = np.where(inside[..., None], colour, image)

    if void_width > 0:
        k = 2 * void_width + 1
        lbl_img = Image.fromarray(labels)
        edge = np.asarray(lbl_img.filter(ImageFilter.MaxFilter(k))) != np.asarray(lbl_img.filter(ImageFilter.MinFilter(k)))
        labels = np.where(edge, 255, labels).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def save_palette_png(labels: np.ndarray, path: Path | str) -> None:
    """Write a label map as a VOC palette PNG (mode 'P' with the VOC colour table)."""
    img = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    img.putpalette(VOC_PALETTE.flatten().tolist())
    img.save(path, optimize=False)


def make_synthetic_voc(root: Path | str, n_train: int = 240, n_val: int = 60,
                       size: tuple[int, int] = (192, 256), seed: int = 0,
                       classes: tuple[int, ...] | None = None, void_width: int = 1) -> Path:
    """Write the embedded data set under ``root`` in the VOC 2012 layout; return ``.../VOCdevkit/VOC2012``.

    Args:
        root: folder that will hold ``VOCdevkit/`` (created if missing).
        n_train, n_val: images in the ``train`` and ``val`` splits (``trainval`` is both).
        size: (height, width) of every image in pixels.
        seed: the set is a pure function of its arguments.
        classes: VOC class indices (1..20) objects are drawn from; default all 20.
        void_width: half-width of the 255 band along object contours, pixels.
    """
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be >= 1, got n_train={n_train}, n_val={n_val}")
    height, width = size
    if height < 32 or width < 32:
        raise ValueError(f"size must be at least 32x32 pixels, got {size}")
    classes = tuple(range(1, 21)) if classes is None else tuple(int(c) for c in classes)
    bad = [c for c in classes if not 1 <= c < len(VOC_CLASSES)]
    if bad or not classes:
        raise ValueError(f"classes must be VOC indices 1..20, got {classes}")

    voc = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    names = [f"synthetic_{i:06d}" for i in range(n_train + n_val)]
    for i, name in enumerate(names):
        image, labels = synthesize_image(seed, i, (height, width), classes, void_width)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=92)
        save_palette_png(labels, voc / "SegmentationClass" / f"{name}.png")
    splits = {"train": names[:n_train], "val": names[n_train:], "trainval": names}
    for split, ids in splits.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    marker = _marker(n_train, n_val, (height, width), seed, classes, void_width)
    (voc / "SYNTHETIC").write_text(json.dumps(marker, indent=1) + "\n")
    return voc


def _marker(n_train, n_val, size, seed, classes, void_width) -> dict:
    return {"generator_version": GENERATOR_VERSION, "n_train": n_train, "n_val": n_val,
            "size": list(size), "seed": seed, "classes": list(classes), "void_width": void_width}


def ensure_embedded_voc(root: Path | str, n_train: int = 240, n_val: int = 60,
                        size: tuple[int, int] = (192, 256), seed: int = 0) -> Path:
    """Return ``root/VOCdevkit/VOC2012``, generating the embedded set there first if it is missing or stale.

    Safe when several processes (parallel notebooks) ask at once: each generates into a private
    temporary folder and moves it into place with one rename; the first one wins.
    """
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    wanted = _marker(n_train, n_val, size, seed, tuple(range(1, 21)), 1)
    if _read_marker(voc) == wanted:
        return voc
    if voc.is_dir() and not (voc / "SYNTHETIC").exists():
        raise FileExistsError(f"{voc} holds a data set that is not the embedded one; "
                              f"pass another root (DEEPLAB_DATA) instead of overwriting it")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-embedded-", dir=root))
    try:
        make_synthetic_voc(tmp, n_train=n_train, n_val=n_val, size=size, seed=seed)
        if _read_marker(voc) == wanted:           # someone else finished first
            return voc
        if voc.exists():                           # stale embedded set: move it aside, then drop it
            stale = Path(tempfile.mkdtemp(prefix=".tmp-stale-", dir=root))
            os.replace(voc.parent, stale / "VOCdevkit")
        try:
            os.replace(tmp / "VOCdevkit", voc.parent)
        except OSError:
            if _read_marker(voc) != wanted:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for stale in root.glob(".tmp-stale-*"):
            shutil.rmtree(stale, ignore_errors=True)
    return voc


def _read_marker(voc: Path) -> dict | None:
    try:
        return json.loads((voc / "SYNTHETIC").read_text())
    except (OSError, ValueError):
        return None
