"""affectexp: facial-expression recognition experiments on AffectNet-style data."""

import os

# albumentations checks PyPI for updates on import, which stalls for seconds offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
