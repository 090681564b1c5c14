"""Pure plotting and drawing functions behind the lessons and their widgets.

Every function takes arrays/tensors/parameters and returns data or a matplotlib ``Figure``;
nothing here holds state or touches ipywidgets (see :mod:`deeplab_lessons.widgets`).
"""

from __future__ import annotations
