"""Does a notebook cell that shows a figure carry it as an image? Shared by `make run` / `make notebooks`
(tools/run_notebooks.py), nbval (notebooks/conftest.py) and the committed-notebook test.

nbval compares text outputs only, so a cell that should draw a figure but prints
``<Figure size 864x206 with 4 Axes>`` instead (a matplotlib ``Figure`` made without pyplot, shown
in a kernel whose inline backend was never activated) would pass unnoticed without this check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Source that draws a figure for the cell: pyplot figures (shown at the end of the cell by the inline
#: backend), ``plt.show()``, ``display(fig ...)`` / ``display(plot_...)``, or a bare ``fig`` as last line.
_DRAWS = re.compile(r"plt\.(show|subplots|figure)\(|display\(\s*(fig\w*|plot_\w+)\b")
_BARE_FIGURE = re.compile(r"(fig\w*|plot_\w+\(.*\))")


def _last_statement(source: str) -> str:
    lines = [line.strip() for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    return lines[-1] if lines else ""


def shows_figure(source: str) -> bool:
    """True when the cell's source draws a figure that should come out as an image."""
    return bool(_DRAWS.search(source) or _BARE_FIGURE.fullmatch(_last_statement(source)))


def _data(output) -> Mapping:
    return output.get("data", {}) if isinstance(output, Mapping) else getattr(output, "data", {}) or {}


def figure_problem(source: str, outputs: Iterable) -> str | None:
    """Why this cell's outputs lack its figure, or ``None`` when they are fine."""
    outputs = list(outputs)
    has_image = any("image/png" in _data(o) for o in outputs)
    as_text = [o for o in outputs if "image/png" not in _data(o)
               and str(_data(o).get("text/plain", "")).startswith("<Figure size")]
    if as_text:
        return "a matplotlib Figure was shown as text (" + str(_data(as_text[0])["text/plain"]) + "), not as an image"
    if shows_figure(source) and not has_image:
        return "the cell draws a figure but produced no image/png output"
    return None
