"""Importing this module registers every strategy: one import line per strategy file."""

from subsets import full, uniform  # noqa: F401
