"""ipywidgets explorers: thin wrappers that wire sliders to the pure functions in ``viz``.

Each explorer is a class whose callbacks are methods, so tests can set ``slider.value`` and
check what was redrawn; the notebook cell that shows one is a single line.
"""

from __future__ import annotations
