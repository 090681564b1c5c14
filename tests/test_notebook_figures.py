"""Every committed notebook shows its figures as images (nbval never compares images).

The same rule runs while notebooks execute: under nbval (notebooks/conftest.py) and in
`make run` / `make notebooks` (tools/run_notebooks.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from figure_check import figure_problem, shows_figure  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_rule_catches_a_figure_printed_as_text_and_a_missing_image():
    text_only = [{"output_type": "execute_result", "data": {"text/plain": "<Figure size 864x205.92 with 4 Axes>"}}]
    image = [{"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure size 1x1>"}}]
    assert "as text" in figure_problem("fig = plot_label_maps(a, b, c)\nfig", text_only)
    assert figure_problem("fig = plot_label_maps(a, b, c)\nfig", image) is None
    assert "no image/png" in figure_problem("fig, ax = plt.subplots()\nax.plot([1, 2])", [])
    assert "no image/png" in figure_problem("display(fig)", [])
    assert figure_problem("print('no figure here')", [{"output_type": "stream", "text": "x"}]) is None
    assert shows_figure("explorer = CRFExplorer(a, b)\nfig") and not shows_figure("figures = 3\nprint(figures)")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_figures_are_images(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    problems = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        problem = figure_problem("".join(cell["source"]), cell.get("outputs", []))
        if problem:
            problems.append(f"cell {index}: {problem}")
    assert not problems, f"{notebook.name} (run `make notebooks`):\n  " + "\n  ".join(problems)
