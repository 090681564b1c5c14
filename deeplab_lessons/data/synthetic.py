"""The embedded data set: a procedurally generated PASCAL VOC 2012 look-alike on which DeepLab's ideas matter.

Nothing can be downloaded in the lessons' default setting, so :func:`make_synthetic_voc` writes
a data set in *exactly* the VOC 2012 layout, read by the same :class:`VOCSegmentation` as the
real thing::

    VOCdevkit/VOC2012/
        JPEGImages/<id>.jpg                     RGB JPEG
        SegmentationClass/<id>.png              palette PNG (VOC palette), 255 = void band
        ImageSets/Segmentation/{train,val,trainval}.txt
        SYNTHETIC                               marker: how the set was generated (JSON)

It is built so that the experiments of the DeepLab papers have something to measure:

- **Colour carries no class.** Each image holds 1-6 objects over a textured, low-chroma
  background. An object is a *body* of random shape, random saturated colour and random stripe
  texture that says nothing about its class, plus small *badges*: discs with a dark rim whose
  colour (:data:`BADGE_COLOURS`) names the class, the first on the body's outline. No body pixel
  comes within :data:`BODY_BADGE_GAP` of a badge colour; a per-pixel colour classifier labels
  the badges and leaves the bodies at chance (the set's property P1 measures it).
- **Context decides.** A body pixel's class is written in a badge up to :data:`BADGE_REACH`
  (40 px) away: a body that reaches farther from its badge gets more badges. A network needs a
  field of view that reaches that far, and one that does can label every pixel.
- **Scale.** Object radii are log-uniform over a 5.6x range (:data:`OBJECT_RADIUS`).
- **Image-level context.** Two classes, :data:`IMAGE_CUE_PAIR` (cat and dog), wear the same
  badge; the background's tint (warm or cool, the whole image) tells them apart.
- **Boundaries.** Bodies differ from the background in colour, so the fully connected CRF can
  snap a coarse stride-8 prediction to their outlines; their striped interiors are not flat.

A void band (label 255) runs along every object contour, as in VOC. The set is deterministic
for a seed: image ``i`` depends only on ``(seed, i)``. The masks use the VOC colour map like the
real data.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .palette import VOC_CLASSES, VOC_PALETTE

#: Bumped whenever the generator's output changes, so stale sets are regenerated.
GENERATOR_VERSION = 7

_SHAPES = ("ellipse", "rectangle", "triangle", "star", "blob")

#: Object (body) radius as a fraction of the image's short side, drawn log-uniformly.
OBJECT_RADIUS = (0.05, 0.28)

#: Badge radius as a fraction of its body's radius, and its bounds in pixels (of a 192-px short side).
BADGE_FRACTION = 0.5
BADGE_PIXELS = (6.0, 14.0)

#: Farthest a body pixel may be from the centre of one of its object's badges, in pixels of a 192-px
#: short side: a body that reaches farther from its first badge gets more, each at the body pixel
#: farthest from those placed so far. It lies between the fields the experiments compare: beyond
#: what the 51-px small-field control sees (25 px from its centre), well within LargeFOV's field
#: (results/cue.json measures how far a trained one's predictions follow a badge).
BADGE_REACH = 40.0

#: JPEG quality of the embedded set's images.
JPEG_QUALITY = 92

#: The two classes that wear the same badge: the first in warm-tinted images, the second in cool ones.
IMAGE_CUE_PAIR = (8, 12)   # cat, dog

#: Background tint of a warm (+1) or cool (-1) image, RGB levels added to the grey.
TINT = np.array([16.0, 3.0, -16.0], dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a random ``cells x cells`` grid upsampled bicubically."""
    grid = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC)
    return np.clip(np.asarray(img), -1.0, 1.0)


def _shape_polygon(rng: np.random.Generator, shape: str, cx: float, cy: float, r: float) -> list:
    """Vertices of a polygonal shape of radius ``r`` around (cx, cy), randomly rotated."""
    angle0 = rng.uniform(0, 2 * np.pi)
    if shape == "triangle":
        radii, n = np.full(3, r * 1.25), 3
    elif shape == "star":
        n = 2 * int(rng.integers(4, 7))
        radii = np.where(np.arange(n) % 2 == 0, r * 1.15, r * rng.uniform(0.55, 0.7))
    else:  # blob: an irregular polygon with many vertices
        n = 14
        radii = r * (1 + 0.3 * _smooth_noise(rng, 1, n, 4)[0])
    angles = angle0 + np.arange(n) * 2 * np.pi / n
    return [(float(cx + rad * np.cos(a)), float(cy + rad * np.sin(a))) for rad, a in zip(radii, angles)]


def _draw_shape(rng, draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float) -> None:
    if shape in ("ellipse", "rectangle"):
        aspect = rng.uniform(0.7, 1.45)
        box = [cx - r * aspect, cy - r / aspect, cx + r * aspect, cy + r / aspect]
        getattr(draw, shape)(box, fill=255)
    else:
        draw.polygon(_shape_polygon(rng, shape, cx, cy, r), fill=255)


def _badge_colours() -> np.ndarray:
    """RGB [21, 3] float: one badge colour per class from the lattice {30, 140, 245}^3 (greys left out).

    Any two badges differ by at least 105 levels in one channel; the two classes of
    :data:`IMAGE_CUE_PAIR` share a colour, so 19 of the 26 lattice colours are used.
    """
    levels = (30.0, 140.0, 245.0)
    lattice = [(r, g, b) for r in levels for g in levels for b in levels if not r == g == b]
    lattice.sort(key=lambda rgb: (-sum(rgb), rgb))
    colours = np.zeros((len(VOC_CLASSES), 3), dtype=np.float32)
    it = iter(lattice)
    for c in range(1, len(VOC_CLASSES)):
        colours[c] = colours[IMAGE_CUE_PAIR[0]] if c == IMAGE_CUE_PAIR[1] else next(it)
    return colours


#: The colour of each class's badge (row = class index; row 0 unused).
BADGE_COLOURS = _badge_colours()


#: Least difference, in the channel where they differ most, between any body pixel's colour and every
#: badge colour: a body is never the colour of a badge, so no stretch of body reads as another class's badge.
BODY_BADGE_GAP = 30.0

#: Largest shift of a body pixel from its body's colour, the same in every channel: stripes (28) plus shading (12).
BODY_TEXTURE = 40.0


def _badge_distance(colour: np.ndarray, shift: float = BODY_TEXTURE) -> float:
    """The least Chebyshev distance from ``colour + t`` (t in [-shift, shift], every channel) to a badge colour."""
    d = colour[None, :] - BADGE_COLOURS[1:]
    t = np.clip(-(d.max(1) + d.min(1)) / 2, -shift, shift)        # the shift that comes closest to each badge
    return float(np.abs(d + t[:, None]).max(1).min())


def _body_colour(rng: np.random.Generator) -> np.ndarray:
    """A random saturated colour whose texture never comes within :data:`BODY_BADGE_GAP` of a badge colour:
    any hue, saturation 0.45-0.9, value 0.45-0.95 (RGB levels), redrawn until it keeps that distance."""
    while True:
        rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.45, 0.9), rng.uniform(0.45, 0.95))
        colour = 255.0 * np.asarray(rgb, dtype=np.float32)
        if _badge_distance(colour) >= BODY_BADGE_GAP:
            return colour


def _stripes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random stripe pattern in [-1, 1]: period 4-12 px, any orientation."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(4.0, 12.0)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
    return np.sin(phase + rng.uniform(0, 2 * np.pi)).astype(np.float32)


def _place(rng: np.random.Generator, placed: list, height: int, width: int, short: int) -> tuple | None:
    """A centre and radius for a new body that keeps clear of the bodies already placed (None: no room)."""
    lo, hi = np.log(OBJECT_RADIUS[0] * short), np.log(OBJECT_RADIUS[1] * short)
    for _ in range(30):
        r = float(np.exp(rng.uniform(lo, hi)))
        cx, cy = rng.uniform(0.05, 0.95) * width, rng.uniform(0.05, 0.95) * height
        if all(np.hypot(cx - x, cy - y) > 1.35 * (r + q) + 2 for x, y, q in placed):
            return cx, cy, r
    return None


def _badge_centre(rng: np.random.Generator, inside: np.ndarray, cx: float, cy: float, rb: float) -> tuple:
    """Where the badge goes: the body's outline in a random direction (8 tries to land inside the image, then moved inside)."""
    height, width = inside.shape
    ys, xs = np.nonzero(inside)
    dist, direction = np.hypot(xs - cx, ys - cy), np.arctan2(ys - cy, xs - cx)
    for _ in range(8):
        angle = rng.uniform(0, 2 * np.pi)
        along = np.cos(direction - angle) > 0.97
        reach = dist[along].max() if along.any() else dist.max()
        bx, by = cx + reach * np.cos(angle), cy + reach * np.sin(angle)
        if rb / 2 <= bx <= width - 1 - rb / 2 and rb / 2 <= by <= height - 1 - rb / 2:
            break
    return float(np.clip(bx, rb / 2, width - 1 - rb / 2)), float(np.clip(by, rb / 2, height - 1 - rb / 2))


def _badge_centres(inside: np.ndarray, first: tuple[float, float], reach: float | None,
                   margin: float) -> list[tuple[float, float]]:
    """``first`` and, while some body pixel is farther than ``reach`` from every centre, a centre on that
    farthest pixel, moved at most ``margin`` pixels inwards so that its badge lies inside the image."""
    centres = [first]
    if reach is None:
        return centres
    height, width = inside.shape
    margin = min(margin, (min(height, width) - 1) / 2, reach / 2)   # the moved centre stays within reach of that pixel
    ys, xs = np.nonzero(inside)
    dist = np.hypot(xs - first[0], ys - first[1])
    while dist.max() > reach:
        k = int(np.argmax(dist))
        x, y = float(np.clip(xs[k], margin, width - 1 - margin)), float(np.clip(ys[k], margin, height - 1 - margin))
        centres.append((x, y))
        dist = np.minimum(dist, np.hypot(xs - x, ys - y))
    return centres


def synthesize_image(seed: int, index: int, size: tuple[int, int] = (192, 256),
                     classes: tuple[int, ...] = tuple(range(1, 21)), void_width: int = 1,
                     max_objects: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """One (image, label) pair: uint8 RGB [H, W, 3] and uint8 labels [H, W] (255 = void band).

    ``void_width`` pixels on each side of every object contour are set to 255 (VOC's band is
    about 5 px wide in total on 500x375 images).
    """
    image, labels, _ = synthesize_scene(seed, index, size, classes, void_width, max_objects)
    return image, labels


def synthesize_scene(seed: int, index: int, size: tuple[int, int] = (192, 256),
                     classes: tuple[int, ...] = tuple(range(1, 21)), void_width: int = 1,
                     max_objects: int = 6, relabel: dict[int, int] | None = None,
                     badge_reach: float | None = BADGE_REACH) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """:func:`synthesize_image` plus what was drawn, and the same scene with other badges.

    Returns ``(image, labels, objects)``; each object is a dict with ``label``, ``centre``
    (x, y), ``radius``, ``badge`` (x, y: the first badge), ``badges`` (all of them) and
    ``badge_radius`` in pixels, in drawing order. ``badge_reach`` (pixels of a 192-px short side,
    :data:`BADGE_REACH`) adds badges until every body pixel is that close to one; None draws one
    badge per object, however far its body reaches (the cue experiment's probe scenes).
    ``relabel`` maps an object's position in that list to another class: its badge is drawn in
    that class's colour (and its pixels labelled so); everything else in the image is unchanged,
    pixel for pixel. The effective-receptive-field experiment uses it to change one distant cue.
    """
    relabel = dict(relabel or {})
    height, width = size
    short = min(height, width)
    rng = np.random.default_rng([seed, index])

    # Background: low-chroma grey of random brightness, the image's warm or cool tint, shading,
    # a few grey strokes of clutter, grain.
    warm = bool(rng.integers(0, 2))
    bg = rng.uniform(70, 185) + (1.0 if warm else -1.0) * TINT + rng.uniform(-4, 4, size=3)
    shade = _smooth_noise(rng, height, width, int(rng.integers(3, 7)))[..., None]
    image = bg + 30.0 * shade
    clutter = Image.new("F", (width, height), 0.0)
    draw = ImageDraw.Draw(clutter)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.1, 0.5) * short
        draw.line([(x0, y0), (x0 + length * np.cos(angle), y0 + length * np.sin(angle))],
                  fill=float(rng.uniform(-45, 45)), width=int(rng.integers(1, 4)))
    image = image + np.asarray(clutter)[..., None] + rng.normal(0, 6, size=(height, width, 3))
    labels = np.zeros((height, width), dtype=np.uint8)

    placed: list = []
    objects: list[dict] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        spot = _place(rng, placed, height, width, short)
        if spot is None:
            break
        cx, cy, r = spot
        placed.append(spot)
        label = int(rng.choice(classes))
        if label in IMAGE_CUE_PAIR:                      # same badge: the tint decides
            label = IMAGE_CUE_PAIR[0] if warm else IMAGE_CUE_PAIR[1]
        label = int(relabel.get(len(objects), label))
        body = Image.new("L", (width, height), 0)
        _draw_shape(rng, ImageDraw.Draw(body), _SHAPES[int(rng.integers(len(_SHAPES)))], cx, cy, r)
        inside = np.asarray(body) > 0
        if not inside.any():
            continue
        if label < 1 or label >= len(VOC_CLASSES):
            raise ValueError(f"relabel: class {label} is not a VOC object class (1..20)")
        texture = 28.0 * _stripes(rng, height, width)[..., None] * rng.uniform(0.5, 1.0)     # |texture + shading| <= BODY_TEXTURE
        colour = _body_colour(rng) + texture + 12.0 * _smooth_noise(rng, height, width, 8)[..., None]
        image = np.where(inside[..., None], colour, image)

        # The badges: rimmed discs in the class's colour, the first centred on the body's outline,
        # more where the body reaches farther than badge_reach from every badge.
        rb = float(np.clip(BADGE_FRACTION * r, *(p * short / 192 for p in BADGE_PIXELS)))
        first = _badge_centre(rng, inside, cx, cy, rb)
        centres = _badge_centres(inside, first, None if badge_reach is None else badge_reach * short / 192, rb)
        rim = min(max(1.0, rb * 0.3), rb / 2)
        outer, inner = Image.new("L", (width, height), 0), Image.new("L", (width, height), 0)
        draw_outer, draw_inner = ImageDraw.Draw(outer), ImageDraw.Draw(inner)
        for bx, by in centres:
            draw_outer.ellipse([bx - rb, by - rb, bx + rb, by + rb], fill=255)
            draw_inner.ellipse([bx - rb + rim, by - rb + rim, bx + rb - rim, by + rb - rim], fill=255)
        badge, core = np.asarray(outer) > 0, np.asarray(inner) > 0
        badge_colour = np.clip(BADGE_COLOURS[label] + rng.normal(0, 6, size=3), 0, 255)
        image = np.where(badge[..., None], rng.uniform(10, 40), image)
        image = np.where(core[..., None], badge_colour + rng.normal(0, 4, size=(height, width, 3)), image)
        labels = np.where(inside | badge, label, labels).astype(np.uint8)
        objects.append({"label": label, "centre": (float(cx), float(cy)), "radius": float(r),
                        "badge": first, "badges": centres, "badge_radius": rb})

    if void_width > 0:
        k = 2 * void_width + 1
        lbl_img = Image.fromarray(labels)
        edge = np.asarray(lbl_img.filter(ImageFilter.MaxFilter(k))) != np.asarray(lbl_img.filter(ImageFilter.MinFilter(k)))
        labels = np.where(edge, 255, labels).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), labels, objects


def save_palette_png(labels: np.ndarray, path: Path | str) -> None:
    """Write a label map as a VOC palette PNG (mode 'P' with the VOC colour table)."""
    img = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    img.putpalette(VOC_PALETTE.flatten().tolist())
    img.save(path, optimize=False)


#: The widest void band :func:`make_synthetic_voc` draws (half-width, pixels): wider bands would hide small objects.
MAX_VOID_WIDTH = 8


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
    for name, value in (("n_train", n_train), ("n_val", n_val), ("seed", seed), ("void_width", void_width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"make_synthetic_voc: {name} must be a whole number, got {value!r}")
    n_train, n_val, seed, void_width = int(n_train), int(n_val), int(seed), int(void_width)
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be >= 1, got n_train={n_train}, n_val={n_val}")
    if seed < 0:
        raise ValueError(f"make_synthetic_voc: seed must be >= 0, got {seed}")
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise TypeError(f"make_synthetic_voc: size must be (height, width) in pixels, got {size!r}") from None
    if height < 32 or width < 32 or (height, width) != tuple(size):
        raise ValueError(f"size must be whole numbers of at least 32x32 pixels, got {size}")
    if not 0 <= void_width <= MAX_VOID_WIDTH:
        raise ValueError(f"void_width (the half-width of the void band along contours) must be 0..{MAX_VOID_WIDTH} "
                         f"pixels, got {void_width}")
    if classes is not None and (isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__")
                                or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in classes)):
        raise TypeError(f"make_synthetic_voc: classes must be a sequence of VOC class indices 1..20, got {classes!r}")
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
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=JPEG_QUALITY)
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
