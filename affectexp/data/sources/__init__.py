"""Readers that turn a data set on disk into a table of face rows (see rows.py)."""
