"""DeepLab Lessons: the helper package behind the notebook series.

One module per topic, imported by the notebooks and tested in ``tests/``. Listed bottom to
top: a module imports only from modules above it in this list (``tests/test_architecture.py`` checks
that no import runs in a circle and no private name crosses modules).

- :mod:`deeplab_lessons.papers` — the papers' figures, each with its source
- :mod:`deeplab_lessons.receptive_field`, :mod:`deeplab_lessons.atrous` — lessons 01-02
- :mod:`deeplab_lessons.metrics` — mIoU from one confusion matrix
- :mod:`deeplab_lessons.models` — DeepLab v1/v2/v3/v3+, models by name (``build_model``)
- :mod:`deeplab_lessons.data` — PASCAL VOC 2012 reader, the embedded set, augmentation, sampling
- :mod:`deeplab_lessons.config` — paths, device and thread choice, the lesson profiles (smoke, cpu, gpu, paper)
- :mod:`deeplab_lessons.inference` — probabilities, labels, multi-scale + flip, ``evaluate``
- :mod:`deeplab_lessons.train` — the recipe, the engine, checkpoints and the CLI (lesson 05)
- :mod:`deeplab_lessons.crf` — the fully connected CRF (lesson 06)
- :mod:`deeplab_lessons.experiments` — the papers' experiments on the embedded set, with seeds (lessons 03-07)
- :mod:`deeplab_lessons.viz`, :mod:`deeplab_lessons.widgets` — pure plots and their sliders

Each public name has one import path, the ``__all__`` of its module or subpackage
(``from deeplab_lessons.crf import dense_crf``, not ``deeplab_lessons.crf.api``).

Submodules are imported on demand so that ``import deeplab_lessons`` stays cheap.
"""

__version__ = "0.1.0"
