"""Checks of single values that several table validators share (the grid's, a method's, a lottery's seeds)."""

from __future__ import annotations

from typing import Any

from specs.base import SpecError, coerce
from specs.job import SEED_MAX


def seed_list(value: Any, key: str) -> list[int]:
    """A non-empty list of distinct seeds in ``[0, SEED_MAX]``; :class:`SpecError` at ``key`` otherwise."""
    if not isinstance(value, list) or not value:
        raise SpecError(key, "a non-empty list of integers")
    for i, s in enumerate(value):
        coerce(s, int, f"{key}[{i}]", {"min": 0, "max": SEED_MAX})
    if len(set(value)) != len(value):
        raise SpecError(key, "distinct seeds")
    return list(value)
