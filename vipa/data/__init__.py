"""Datasets: the RefCOCO family loader, the built-in synthetic set, and transforms."""
