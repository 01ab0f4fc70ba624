"""Words for messages: counts with the right plural."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """``1 group``, ``2 groups``, ``0 jobs``."""
    return f"{n} {word}" + ("" if n == 1 else "s")
