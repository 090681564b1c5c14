"""DeepLab Lessons: the helper package behind the notebook series.

One module per topic, imported by the notebooks and tested in ``tests/``:

- :mod:`deeplab_lessons.config` — paths, device choice, CPU- vs GPU-sized lesson settings
- :mod:`deeplab_lessons.data` — PASCAL VOC 2012 reader and the embedded synthetic VOC set
- :mod:`deeplab_lessons.receptive_field`, :mod:`deeplab_lessons.atrous` — lessons 01-02
- :mod:`deeplab_lessons.models` — DeepLab v1/v2/v3/v3+
- :mod:`deeplab_lessons.metrics`, :mod:`deeplab_lessons.train` — lesson 05
- :mod:`deeplab_lessons.crf` — the fully connected CRF (lesson 06)
- :mod:`deeplab_lessons.viz`, :mod:`deeplab_lessons.widgets` — pure plots and their sliders

Submodules are imported on demand so that ``import deeplab_lessons`` stays cheap.
"""

__version__ = "0.1.0"
