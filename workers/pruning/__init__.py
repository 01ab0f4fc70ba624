"""Pruning for lottery tickets: masks (``mask.py``) and strategies behind a base + registry."""
