"""Importing this module registers every strategy: one import line per strategy file."""

from subsets import (  # noqa: F401
    full,
    named,
    per_class_accuracy,
    uniform,
    wordnet,
)
