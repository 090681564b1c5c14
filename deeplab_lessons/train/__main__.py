"""``python -m deeplab_lessons.train``: see :mod:`deeplab_lessons.train.cli`."""

import sys

from deeplab_lessons.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
