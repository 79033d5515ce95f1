"""Embedded synthetic data set: procedurally drawn faces in AffectNet's on-disk layout.

Uses NumPy and OpenCV only (never TensorFlow, Keras or MLflow), so it runs in light workers.
"""

from affectexp.data.synthetic.dataset import ensure_synthetic, generate_affectnet
from affectexp.data.synthetic.face import SyntheticFace, render_face

__all__ = ["SyntheticFace", "ensure_synthetic", "generate_affectnet", "render_face"]
