"""Reading recorded results: mean and spread over seeds, the paper's number beside them, and
whether a difference between two arms is a finding at this budget.

A difference counts as *resolved* only when it exceeds its spread: the gap between the two
arms' means is larger than the sum of their standard deviations over seeds (their mean +- 1 std
intervals do not overlap). Anything less is reported as "not resolved at this budget".
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from deeplab_lessons.papers import PAPER_FIGURES


def metric_value(record: dict, metric: str) -> Any:
    """``record["measures"]`` looked up along a dotted path, e.g. ``"size_terciles.accuracy.0"``."""
    value: Any = record["measures"]
    for part in metric.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def arm_values(results: dict, arm: str, metric: str = "mean_iou") -> list[float]:
    """The metric of every recorded seed of ``arm``, in seed order (records without it skipped)."""
    values = []
    for record in sorted(results["records"], key=lambda r: r["seed"]):
        if record["arm"] != arm:
            continue
        value = metric_value(record, metric)
        if value is not None:
            values.append(float(value))
    return values


def arms(results: dict) -> list[str]:
    """The arms of a results file in the order they were first recorded."""
    seen: list[str] = []
    for record in results["records"]:
        if record["arm"] not in seen:
            seen.append(record["arm"])
    return seen


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value); NaN for none."""
    if not values:
        return math.nan, math.nan
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def paper_value(key: str | None) -> float | None:
    """The paper's mIoU (%) for a row: the figure's value, or its first number for "a -> b" figures."""
    if key is None:
        return None
    value = PAPER_FIGURES[key].value
    if isinstance(value, str):
        value = value.split("->")[0].strip()
    return float(value)


def summary(results: dict, metric: str = "mean_iou", scale: float = 100.0) -> list[dict]:
    """One row per arm: ``arm``, ``n`` seeds, ``mean`` and ``std`` (times ``scale``), ``values``, ``paper``."""
    rows = []
    for arm in arms(results):
        values = [scale * v for v in arm_values(results, arm, metric)]
        mean, std = mean_std(values)
        key = next((r.get("paper") for r in results["records"] if r["arm"] == arm), None)
        rows.append({"arm": arm, "n": len(values), "mean": mean, "std": std, "values": values,
                     "paper": paper_value(key), "paper_key": key})
    return rows


def compare(results: dict, a: str, b: str, metric: str = "mean_iou", scale: float = 100.0) -> dict:
    """``b`` minus ``a``: the difference of means, the spread (std a + std b) and ``resolved``."""
    return compare_values(arm_values(results, a, metric), arm_values(results, b, metric), a, b, scale)


def compare_values(a_values: Sequence[float], b_values: Sequence[float], a: str = "a", b: str = "b",
                   scale: float = 100.0) -> dict:
    """:func:`compare` on two lists of per-seed values (e.g. arms recorded in two results files)."""
    ma, sa = mean_std([scale * v for v in a_values])
    mb, sb = mean_std([scale * v for v in b_values])
    diff, spread = mb - ma, sa + sb
    return {"a": a, "b": b, "difference": diff, "spread": spread,
            "resolved": bool(abs(diff) > spread and not math.isnan(diff))}


def verdict(comparison: dict, unit: str = " points", fmt: Callable[[float], str] = "{:+.1f}".format) -> str:
    """A sentence for a lesson: the measured difference and whether it is a finding at this budget."""
    c = comparison
    if math.isnan(c["difference"]):
        return f"{c['b']} vs {c['a']}: not measured"
    text = f"{c['b']} vs {c['a']}: {fmt(c['difference'])}{unit} (spread {c['spread']:.1f})"
    return text + (" — resolved" if c["resolved"] else " — not resolved at this budget")


def format_table(rows: list[dict], unit: str = "mIoU %") -> str:
    """A plain-text table of :func:`summary` rows (mean +- std over n seeds, the paper's number)."""
    width = max(len(r["arm"]) for r in rows) if rows else 10
    lines = [f"{'arm':<{width}}  {unit + ' (mean +- std)':>22}  seeds  paper"]
    for r in rows:
        paper = "" if r["paper"] is None else f"{r['paper']:.2f}"
        lines.append(f"{r['arm']:<{width}}  {r['mean']:>13.1f} +- {r['std']:>4.1f}  {r['n']:>5}  {paper}")
    return "\n".join(lines)
