"""The browser harness itself, on a small notebook: an IntSlider redrawing a matplotlib figure.

If this fails, the Lab, ipywidgets' front end or the driver is broken, not a lesson.
"""

from __future__ import annotations

import nbformat
import pytest

CELLS = [
    "import ipywidgets as widgets\nimport matplotlib.pyplot as plt\nimport numpy as np\nfrom IPython.display import display",
    (
        "class Sine:\n"
        "    def __init__(self):\n"
        "        self.frequency = widgets.IntSlider(value=1, min=1, max=5, description='frequency')\n"
        "        self.out = widgets.Output()\n"
        "        self.frequency.observe(self.redraw, names='value')\n"
        "        self.redraw()\n"
        "    def redraw(self, change=None):\n"
        "        x = np.linspace(0, 2 * np.pi, 200)\n"
        "        fig, ax = plt.subplots(figsize=(4, 2), dpi=72)\n"
        "        ax.plot(x, np.sin(self.frequency.value * x))\n"
        "        with self.out:\n"
        "            self.out.clear_output(wait=True)\n"
        "            display(fig)\n"
        "        plt.close(fig)\n"
        "    def _ipython_display_(self):\n"
        "        display(widgets.VBox([self.frequency, self.out]))"
    ),
    "Sine()",
]


@pytest.mark.browser
def test_slider_redraws_figure(lab, tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "harness.ipynb"
    nbformat.write(nb, source)

    lab.open_notebook(lab.copy_notebook(source))
    lab.run_all_cells(timeout_s=60)
    lab.assert_no_errors()

    cell = lab.code_cell("Sine()")
    slider = lab.slider(cell, "frequency")
    image = cell.locator(".jp-Cell-outputArea img").first
    image.wait_for()
    before_src, before_png = image.get_attribute("src"), lab.shot(image, "before")
    assert lab.readout(slider) == "1"

    seconds = lab.timed_redraw(cell, lambda: lab.move_slider(slider, "ArrowRight"))
    assert lab.readout(slider) == "2"
    after_src, after_png = image.get_attribute("src"), lab.shot(image, "after")
    assert after_src != before_src and after_png != before_png

    seconds_typed = lab.timed_redraw(cell, lambda: lab.type_readout(slider, "4"))
    assert lab.readout(slider) == "4"
    assert image.get_attribute("src") != after_src
    print(f"harness redraw: {seconds:.3f} s by arrow key, {seconds_typed:.3f} s by readout")
    lab.assert_no_errors()
