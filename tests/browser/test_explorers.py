"""The lessons' widget explorers as a learner meets them: JupyterLab in Chromium.

Each test opens a copy of a lesson notebook in the Lab (the committed notebook is untouched),
runs its cells with Run > Run All Cells (for lesson 06 a copy that ends at the explorer's
cell), waits for the explorer to render, moves sliders with the keyboard and checks that the
figure redrew: a new image (``src``) and different pixels, with no error output in any cell.
The time from key press to the new image being decoded is measured in the page and printed
in the terminal summary (targets on an idle 2-core CPU: 0.5 s for the receptive-field and
dilation explorers, 1.5 s for the CRF explorer). Screenshots of every state go to the test's
tmp dir; with ``DEEPLAB_SCREENSHOTS=<folder>`` each explorer's first screenshot is also
written there, which is how ``docs/img/`` is refreshed:
``DEEPLAB_SCREENSHOTS=docs/img .venv/bin/python -m pytest tests/browser``.
"""

from __future__ import annotations

import io
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

#: a redraw slower than this many times its target fails the test (the targets are for an idle
#: machine; the slack absorbs a busy one, a redraw that is not live still fails)
SLACK = 4.0

#: README screenshots are kept under this size
MAX_SCREENSHOT_BYTES = 150_000


@dataclass(frozen=True)
class Move:
    """Press ``key`` on the slider described ``label``; its readout must change to ``expect``."""

    label: str
    key: str
    expect: str


def explore(lab, redraw_log: list, notebook: str, explorer_call: str, moves: list[Move], target_s: float,
            screenshot: str, run_timeout_s: float, stop_after_explorer: bool) -> list[float]:
    """Run ``notebook`` in the Lab (a ``LabDriver``), make each move on the explorer.

    Returns the redraw times in seconds, also appended to ``redraw_log`` for the summary.
    """
    source = NOTEBOOKS / notebook
    assert source.exists(), f"{source} is missing"
    name = lab.copy_notebook(source, stop_after=explorer_call if stop_after_explorer else None)
    lab.open_notebook(name)
    run_s = lab.run_all_cells(timeout_s=run_timeout_s)
    lab.assert_no_errors()

    cell = lab.code_cell(explorer_call)
    output = cell.locator(".jp-Cell-outputArea")
    image = output.locator("img").first
    image.wait_for()
    pixels = [lab.shot(output, "0-initial")]
    save_for_readme(pixels[0], screenshot)

    seconds = []
    for i, move in enumerate(moves, start=1):
        slider = lab.slider(cell, move.label)
        src = image.get_attribute("src")
        seconds.append(lab.timed_redraw(cell, lambda: lab.move_slider(slider, move.key)))
        assert lab.readout(slider) == move.expect, f"{move.label} readout after {move.key}"
        assert image.get_attribute("src") != src, f"moving {move.label} did not change the figure"
        state = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{i}-{move.label}-{lab.readout(slider)}")
        pixels.append(lab.shot(output, state))
        assert pixels[-1] != pixels[-2], f"moving {move.label} left the rendered figure unchanged"
        lab.wait_idle()
        lab.assert_no_errors()

    redraw_log.append((f"{notebook} ({run_s:.0f} s to run its cells)",
                       [(f"{m.label} {m.key}", t) for m, t in zip(moves, seconds)], target_s))
    median = statistics.median(seconds)
    assert median < SLACK * target_s, (
        f"{explorer_call} redraws in {median:.2f} s (median of {seconds}), target {target_s} s")
    return seconds


def save_for_readme(png: bytes, name: str) -> None:
    """With ``$DEEPLAB_SCREENSHOTS`` set, write ``png`` there as ``name`` (PNG, under 150 KB)."""
    folder = os.environ.get("DEEPLAB_SCREENSHOTS")
    if not folder:
        return
    image = Image.open(io.BytesIO(png)).convert("RGB")
    data = png
    for colors in (256, 128, 64):  # an adaptive palette keeps the text sharp and the file small
        if len(data) <= MAX_SCREENSHOT_BYTES:
            break
        buffer = io.BytesIO()
        image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
        data = buffer.getvalue()
    assert len(data) <= MAX_SCREENSHOT_BYTES, f"{name}: {len(data)} bytes even with 64 colours"
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / name).write_bytes(data)


@pytest.mark.browser
def test_receptive_field_explorer(lab, redraw_log):
    """Lesson 01: the depth and dilation sliders redraw the stack's receptive field."""
    explore(
        lab, redraw_log, "01_receptive_fields.ipynb", "ReceptiveFieldExplorer(",
        moves=[Move("layer", "ArrowRight", "4"), Move("dilation", "ArrowRight", "2")],
        target_s=0.5, screenshot="receptive_field_explorer.png", run_timeout_s=180, stop_after_explorer=False,
    )


@pytest.mark.browser
def test_dilation_explorer(lab, redraw_log):
    """Lesson 02: the rate slider redraws the atrous kernel and the stack's footprint."""
    explore(
        lab, redraw_log, "02_atrous_convolution.ipynb", "DilationExplorer(",
        moves=[Move("rate", "ArrowRight", "3"), Move("rate", "ArrowRight", "4"), Move("layers", "ArrowLeft", "1")],
        target_s=0.5, screenshot="dilation_explorer.png", run_timeout_s=120, stop_after_explorer=False,
    )


@pytest.mark.browser
@pytest.mark.slow
def test_crf_explorer(lab, redraw_log):
    """Lesson 06: the CRF weight, the iteration count and a kernel width re-run the CRF and redraw.

    Only the cells up to the explorer run (the exercises after it are not part of what is
    checked); before it the lesson trains its network when no checkpoint is found, which
    takes minutes on a 2-core CPU, hence the long timeout.
    """
    explore(
        lab, redraw_log, "06_dense_crf.ipynb", "CRFExplorer(",
        moves=[Move("w1 (bi_w)", "ArrowRight", "4.50"), Move("iterations", "ArrowLeft", "9"),
               Move("θβ (bi_rgb_std)", "ArrowRight", "5.50")],
        target_s=1.5, screenshot="crf_explorer.png", run_timeout_s=600, stop_after_explorer=True,
    )
