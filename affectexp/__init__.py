"""affectexp: facial-expression recognition experiments on AffectNet-style data."""

import os

# albumentations checks PyPI for updates on import, which stalls for seconds offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) buries the run's own log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
