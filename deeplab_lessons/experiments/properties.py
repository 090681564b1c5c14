"""The embedded set's properties P1-P6, measured: what makes DeepLab's experiments meaningful on it.

Each row states the property, its target and what was measured (mean +- std over seeds where a
training is involved, from the committed results files; computed on the data set itself where
not). ``python -m deeplab_lessons.experiments properties`` prints the table; with ``--write``
it replaces the table in ``data/README.md`` (between its ``properties`` markers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deeplab_lessons.data.colour_baseline import ColourLookup
from deeplab_lessons.data.voc import VOCSegmentation
from deeplab_lessons.metrics import ConfusionMatrix

from .results import arm_values, compare, mean_std
from .runner import RESULTS_DIR, load_results

#: The markers around the generated table in data/README.md.
TABLE_START, TABLE_END = "<!-- properties:start -->", "<!-- properties:end -->"


def colour_only_miou(voc: Path) -> float:
    """P1: val mIoU of :class:`~deeplab_lessons.data.ColourLookup` fit on the train split."""
    train, val = VOCSegmentation(voc, "train"), VOCSegmentation(voc, "val")
    lookup = ColourLookup().fit((train.load_image(i), train.load_mask(i)) for i in range(len(train)))
    cm = ConfusionMatrix(21)
    for i in range(len(val)):
        cm.update(lookup.predict(val.load_image(i)), val.load_mask(i))
    return float(cm.compute()["mean_iou"])


def size_span(voc: Path) -> tuple[float, float, float]:
    """P3: 5th and 95th percentile of sqrt(object area) over train + val (px), and their ratio."""
    sizes = []
    for split in ("train", "val"):
        ds = VOCSegmentation(voc, split)
        for i in range(len(ds)):
            mask = ds.load_mask(i)
            sizes += [np.sqrt(np.sum(mask == c)) for c in np.unique(mask) if c not in (0, 255)]
    p5, p95 = np.percentile(sizes, [5, 95])
    return float(p5), float(p95), float(p95 / p5)


def _ms(values, scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "not measured (n=0)"
    mean, std = mean_std([scale * v for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={len(values)})"


def data_properties(voc: Path, results_dir: Path | str | None = None) -> list[dict]:
    """One row per property: ``id``, ``property``, ``target``, ``measured`` (text) and ``met`` (bool)."""
    rdir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    learn, v3, crf = (load_results(rdir / f"{n}.json") for n in ("learnability", "v3-aspp", "crf"))
    rows = []

    p1 = colour_only_miou(voc)
    rows.append({"id": "P1", "property": "colour carries no class", "target": "colour-only val mIoU <= 25",
                 "measured": f"{100 * p1:.1f} (deterministic)", "met": p1 <= 0.25})

    large, small = "LargeFOV (3x3, rate 12)", "small field (51 px)"
    gap = compare(learn, small, large)
    fg_l, fg_s = (arm_values(learn, a, "foreground_iou") for a in (large, small))
    rows.append({"id": "P2", "property": "context decides",
                 "target": "small field >= 15 points below LargeFOV, same budget; both find objects",
                 "measured": f"LargeFOV {_ms(arm_values(learn, large))}, small field {_ms(arm_values(learn, small))}; "
                             f"gap {gap['difference']:.1f} (spread {gap['spread']:.1f}); foreground IoU "
                             f"{_ms(fg_l)} vs {_ms(fg_s)}",
                 "met": gap["difference"] - gap["spread"] >= 15.0})

    p5, p95, ratio = size_span(voc)
    rows.append({"id": "P3", "property": "scale", "target": "95th / 5th percentile of sqrt(area) >= 4",
                 "measured": f"{p95:.0f} px / {p5:.0f} px = {ratio:.1f} (deterministic)", "met": ratio >= 4})

    pool, no_pool = "MG (1,2,4) + image pooling", "MG (1,2,4), no image pooling"
    pair = compare(v3, no_pool, pool, "pair_accuracy")
    with_pool, without = arm_values(v3, pool, "pair_accuracy"), arm_values(v3, no_pool, "pair_accuracy")
    measured = f"pair accuracy {_ms(with_pool)} with, {_ms(without)} without (50 = chance)"
    if with_pool and without:
        measured += (f"; difference {pair['difference']:+.1f}, spread {pair['spread']:.1f}; the pair needs a wide "
                     f"field: small field {_ms(arm_values(learn, small, 'pair_accuracy'))}, LargeFOV "
                     f"{_ms(arm_values(learn, large, 'pair_accuracy'))}")
    else:
        measured += (f"; v3 at the suite's budget predicts neither class (mIoU {_ms(arm_values(v3, pool))} with "
                     f"pooling, {_ms(arm_values(v3, no_pool))} without)")
    rows.append({"id": "P4", "property": "image-level context",
                 "target": "v3 with image pooling tells the tint-coded pair (cat/dog) apart better than without",
                 "measured": measured, "met": pair["resolved"] and pair["difference"] > 0})

    arm = crf["records"][0]["arm"]
    gains = arm_values(crf, arm, "released_params.gain")
    near = arm_values(crf, arm, "released_params.bands.4.gain")
    far = arm_values(crf, arm, "released_params.bands.beyond.gain")
    g, n, f = (mean_std([100 * v for v in vals])[0] for vals in (gains, near, far))
    rows.append({"id": "P5", "property": "boundaries",
                 "target": "CRF gain +1..+8; within 4 px >= 3x beyond 24 px; beyond 24 px <= 1",
                 "measured": f"gain {_ms(gains)}; within 4 px {_ms(near)}; beyond 24 px {_ms(far)}",
                 "met": 1.0 <= g <= 8.0 and n >= 3 * max(f, 0.0) and f <= 1.0})

    miou = arm_values(learn, large)
    rows.append({"id": "P6", "property": "learnable from scratch",
                 "target": "CPU default LargeFOV >= 55 mIoU within 2,000 iterations (batch 8, 128 px)",
                 "measured": _ms(miou), "met": mean_std(miou)[0] >= 0.55})
    return rows


def properties_markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (measured values in mIoU points unless said)."""
    lines = ["| | property | target | measured | met |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['id']} | {r['property']} | {r['target']} | {r['measured']} | {'yes' if r['met'] else 'no'} |")
    return "\n".join(lines)


def write_table(readme: Path, table: str) -> None:
    """Replace the text between :data:`TABLE_START` and :data:`TABLE_END` in ``readme`` by ``table``."""
    text = readme.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"{readme}: no {TABLE_START} ... {TABLE_END} markers to write the table between")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    readme.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}")
