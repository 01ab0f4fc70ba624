"""Deterministic "spread k picks over n items / over groups" helpers shared by the strategies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

ALLOCATIONS = ("even", "proportional")


def even_positions(n: int, k: int, endpoints: bool = False) -> list[int]:
    """``k`` distinct positions spread evenly over ``range(n)`` (``k <= n``).

    ``endpoints=False`` centres the picks in ``k`` equal bins (``k=1`` picks the middle);
    ``endpoints=True`` always includes the first and the last position (for ``k >= 2``).
    """
    if not 0 <= k <= n:
        raise ValueError(f"cannot pick {k} of {n}")
    if k == 0:
        return []
    if endpoints and k >= 2:
        # round(i * (n-1) / (k-1)) with ties up, in integers
        return [(2 * i * (n - 1) + (k - 1)) // (2 * (k - 1)) for i in range(k)]
    return [((2 * i + 1) * n) // (2 * k) for i in range(k)]


def pick_evenly(items: Sequence[T], k: int, endpoints: bool = False) -> list[T]:
    """``k`` items of ``items`` at :func:`even_positions`."""
    return [items[i] for i in even_positions(len(items), k, endpoints)]


def allocate(sizes: Mapping[str, int], k: int, how: str = "even", seed: int = 0) -> dict[str, int]:
    """Split ``k`` picks over groups of the given sizes (a group never gets more than its size).

    ``even``: as equal as possible (water-filling: small groups are taken whole and their unused
    share goes to the others). ``proportional``: ``k * size / total`` each, rounded by largest
    remainder. Leftover single picks go to the larger groups first; among groups of equal size (or
    equal remainder) a permutation seeded by ``seed`` decides, so the result is deterministic.
    """
    total = sum(sizes.values())
    if not 0 <= k <= total:
        raise ValueError(f"cannot pick {k} of {total}")
    if how not in ALLOCATIONS:
        raise ValueError(f"allocation {how!r}: expected one of {ALLOCATIONS}")
    names = sorted(sizes)
    rank = {g: int(r) for g, r in zip(names, np.random.default_rng(seed).permutation(len(names)), strict=True)}
    quota = dict.fromkeys(names, 0)
    if how == "proportional":
        exact = {g: k * sizes[g] / total for g in names}
        for g in names:
            quota[g] = int(exact[g])
        left = k - sum(quota.values())
        order = sorted(names, key=lambda g: (-(exact[g] - quota[g]), -sizes[g], rank[g]))
        for g in order[:left]:
            quota[g] += 1
        return quota
    left = k
    while left > 0:
        open_ = sorted((g for g in names if quota[g] < sizes[g]), key=lambda g: (-sizes[g], rank[g]))
        share = left // len(open_)
        if share == 0:
            for g in open_[:left]:
                quota[g] += 1
            break
        for g in open_:
            add = min(share, sizes[g] - quota[g])
            quota[g] += add
            left -= add
    return quota
