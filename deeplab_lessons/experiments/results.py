"""Reading recorded results: mean and spread over seeds, the paper's number beside them, and
whether a difference between two arms is a finding at this budget.

A difference is *resolved* when Welch's t-test over the seeds (two-sided, unequal variances) gives
p < 0.05: each seed is one independent run, and the test asks whether the two arms' means differ by
more than their seed-to-seed variation explains. :func:`compare` also gives the 95 % confidence
interval of the difference and the difference the experiment would detect 80 % of the time at its n
and spread (an approximate, post-hoc figure from the observed standard error). :func:`verdict` says
plainly when a difference is not resolved and the paper's own effect is below that figure: then the
experiment cannot test the paper's claim (its null result would not contradict it).
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


#: An arm has converged when its mean gain over the last quarter of training is at most this (mIoU points).
CONVERGED_GAIN = 1.5


def convergence(results: dict, arm: str, tolerance: float = CONVERGED_GAIN, scale: float = 100.0) -> dict | None:
    """Whether ``arm`` had stopped learning by the end of its budget, from the recorded learning curves.

    For each seed's ``history`` (``[{"iteration", "mean_iou"}, ...]``) the gain over the last quarter is
    the final mean IoU minus the one at 3/4 of the run (linearly interpolated between evaluations).
    Returns ``{"gain_last_quarter": mean over seeds, "gains": per seed, "n", "converged": gain <= tolerance}``,
    or ``None`` when no record of the arm carries a history (results recorded before histories were).
    """
    gains = []
    for record in sorted(results["records"], key=lambda r: r["seed"]):
        history = record.get("history") if record["arm"] == arm else None
        if not history:
            continue
        its = np.array([h["iteration"] for h in history], dtype=float)
        miou = np.array([h["mean_iou"] for h in history], dtype=float)
        gains.append(scale * float(miou[-1] - np.interp(0.75 * its[-1], its, miou)))
    if not gains:
        return None
    mean = float(np.mean(gains))
    return {"gain_last_quarter": mean, "gains": gains, "n": len(gains), "converged": mean <= tolerance}


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


#: The test's level, and the power at which :func:`compare` states the difference the experiment would detect.
ALPHA, POWER = 0.05, 0.80


def compare(results: dict, a: str, b: str, metric: str = "mean_iou", scale: float = 100.0) -> dict:
    """``b`` minus ``a`` over seeds: :func:`compare_values`, with the paper's difference for the same two
    rows (``paper_difference``, None where the paper has no such pair) when the metric is the mIoU."""
    out = compare_values(arm_values(results, a, metric), arm_values(results, b, metric), a, b, scale)
    if metric == "mean_iou":
        keys = {arm: next((r.get("paper") for r in results["records"] if r["arm"] == arm), None) for arm in (a, b)}
        if all(keys.values()):
            out["paper_difference"] = paper_value(keys[b]) - paper_value(keys[a])
    return out


def welch(a_values: Sequence[float], b_values: Sequence[float]) -> tuple[float, float, float]:
    """Welch's t statistic of mean(b) - mean(a), its degrees of freedom and the two-sided p-value.

    NaN for all three with fewer than two values in either list; with no variance in either arm
    the difference is exact (``t`` infinite, ``p`` 0) unless it is zero (``p`` 1).
    """
    return _welch(a_values, b_values)[:3]


def _welch(a_values: Sequence[float], b_values: Sequence[float]) -> tuple[float, float, float, float]:
    """:func:`welch`'s ``(t, df, p)`` and the standard error of the difference (NaN with too few values)."""
    from scipy import stats

    a, b = np.asarray(a_values, float), np.asarray(b_values, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = b.mean() - a.mean()
    if va + vb == 0:
        t = (math.copysign(math.inf, diff) if diff else 0.0)
        return t, float(len(a) + len(b) - 2), (0.0 if diff else 1.0), 0.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    se = math.sqrt(va + vb)
    t = diff / se
    return float(t), float(df), float(2 * stats.t.sf(abs(t), df)), se


def compare_values(a_values: Sequence[float], b_values: Sequence[float], a: str = "a", b: str = "b",
                   scale: float = 100.0) -> dict:
    """``b`` minus ``a`` on two lists of per-seed values (times ``scale``), tested with Welch's t.

    Returns ``difference`` (of means), ``n_a``/``n_b``, ``t``, ``df``, ``p``, ``ci`` (the 95 %
    interval of the difference), ``detectable`` (the smallest true difference this n and spread
    resolve with 80 % power at p < 0.05: ``(t_{0.975, df} + t_{0.80, df})`` standard errors),
    ``resolved`` (p < 0.05) and ``spread`` (std a + std b, kept for the data set's design targets).
    ``detectable`` is approximate and post hoc (the observed standard error and Welch's df stand in for a
    noncentral-t power calculation); a smaller observed difference can still be resolved.
    """
    from scipy import stats

    av, bv = [scale * v for v in a_values], [scale * v for v in b_values]
    (ma, sa), (mb, sb) = mean_std(av), mean_std(bv)
    diff = mb - ma
    t, df, p, se = _welch(av, bv)
    if math.isnan(df):
        ci, detectable = (math.nan, math.nan), math.nan
    else:
        half = stats.t.ppf(1 - ALPHA / 2, df) * se
        ci = (diff - half, diff + half)
        detectable = (stats.t.ppf(1 - ALPHA / 2, df) + stats.t.ppf(POWER, df)) * se
    return {"a": a, "b": b, "difference": diff, "spread": sa + sb, "n_a": len(av), "n_b": len(bv), "t": t, "df": df,
            "p": p, "ci": ci, "detectable": detectable, "resolved": bool(p < ALPHA) if not math.isnan(p) else False,
            "paper_difference": None}


def verdict(comparison: dict, unit: str = " points", fmt: Callable[[float], str] = "{:+.1f}".format) -> str:
    """A sentence for a lesson: the difference, its test, whether it is resolved, and what the experiment can test.

    With the paper's difference for the same rows (:func:`compare` fills it in) it also says whether the
    measured direction matches the paper's, and says plainly when the difference is not resolved and the
    paper's effect is smaller than the difference this experiment would detect 80 % of the time.
    """
    c = comparison
    if math.isnan(c["difference"]):
        return f"{c['b']} vs {c['a']}: not measured"
    text = f"{c['b']} vs {c['a']}: {fmt(c['difference'])}{unit}"
    if math.isnan(c["p"]):
        return text + f" (n = {c['n_a']} + {c['n_b']} seeds: too few to test) — not resolved"
    lo, hi = c["ci"]
    text += (f" (95 % CI {fmt(lo)} to {fmt(hi)}; Welch's t, n = {c['n_a']} + {c['n_b']} seeds, p = {c['p']:.2g}) — "
             + ("resolved" if c["resolved"] else "not resolved")
             + f"; it would detect a difference of about {c['detectable']:.1f}{unit} 80 % of the time")
    paper = c.get("paper_difference")
    if paper is not None:
        text += f"; the paper's: {fmt(paper)}{unit}"
        if c["resolved"]:
            text += ", same direction" if (paper > 0) == (c["difference"] > 0) else ", the opposite direction"
            if not lo <= paper <= hi:
                text += " (outside the interval)"
        elif abs(paper) < c["detectable"]:
            text += (", below what it detects 80 % of the time: this experiment cannot test the paper's claim "
                     "(a null result here does not contradict it)")
    return text


def format_table(rows: list[dict], unit: str = "mIoU %") -> str:
    """A plain-text table of :func:`summary` rows (mean +- std over n seeds, the paper's number)."""
    width = max(len(r["arm"]) for r in rows) if rows else 10
    lines = [f"{'arm':<{width}}  {unit + ' (mean +- std)':>22}  seeds  paper"]
    for r in rows:
        paper = "" if r["paper"] is None else f"{r['paper']:.2f}"
        lines.append(f"{r['arm']:<{width}}  {r['mean']:>13.1f} +- {r['std']:>4.1f}  {r['n']:>5}  {paper}")
    return "\n".join(lines)


def tap_share_markdown(rows: list[dict]) -> str:
    """A Markdown table of :func:`.measures.tap_share_rows`: per arm, its worst dilated conv's share of off-centre
    taps on the map at the suite's crop and at the paper's, and how many convs fall below the threshold at each."""
    from .measures import MIN_TAP_SHARE

    with_convs = [r for r in rows if r["convs"]]
    if not with_convs:
        return "(no dilated convolution in these arms)"
    crop, paper_crop = with_convs[0]["crop"], with_convs[0]["paper_crop"]
    lines = [f"| arm | dilated convs | worst at {crop} px (this suite) | below {MIN_TAP_SHARE:.0%} | "
             f"worst at {paper_crop} px (the paper) | below {MIN_TAP_SHARE:.0%} |", "|---|---|---|---|---|---|"]
    for r in rows:
        if not r["convs"]:
            lines.append(f"| {r['arm']} | 0 | | | | |")
            continue
        lines.append(f"| {r['arm']} | {r['convs']} | {r['worst_share']:.1%} (`{r['worst']}`) | {r['starved']} | "
                     f"{r['worst_paper_share']:.1%} (`{r['worst_paper']}`) | {r['starved_paper']} |")
    return "\n".join(lines)
