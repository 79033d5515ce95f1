"""Applying trained models to photos and videos: face detection (detectors.py)."""
