"""The grid's ``[adaptive]`` table: how many seeds each (subset, configuration) starts with and may reach,
the device-hour budget, and over how many looks the confidence is spent.

::

    [adaptive]
    seeds_min = 2        # seeds every (subset, configuration) starts with (the first ones of its seed list)
    seeds_max = 6        # at most this many (default: the length of the grid's seed list)
    budget_hours = 0     # stop once the grid has used this many device-hours (0: no budget)
    looks = 0            # looks the confidence is split over (0: seeds_max - seeds_min + 1, one per round)

Absent, nothing changes: every job of the grid runs. The table never enters a job's identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specs.base import SpecError, from_table

MAX_SEEDS = 1000


@dataclass(frozen=True)
class AdaptiveSettings:
    """A validated ``[adaptive]`` table (see the module docstring)."""

    seeds_min: int = field(default=2, metadata={"min": 1, "max": MAX_SEEDS})
    seeds_max: int = field(default=0, metadata={"min": 0, "max": MAX_SEEDS})  # 0: the grid's seed count
    budget_hours: float = field(default=0.0, metadata={"min": 0.0})
    looks: int = field(default=0, metadata={"min": 0, "max": MAX_SEEDS})

    def __post_init__(self) -> None:
        if self.seeds_max and self.seeds_max < self.seeds_min:
            raise SpecError("seeds_max", f"an integer >= seeds_min ({self.seeds_min}), got {self.seeds_max}")

    @property
    def max_looks(self) -> int:
        """The looks the confidence is split over: one per round of added seeds unless ``looks`` says."""
        return self.looks or (self.seeds_max - self.seeds_min + 1)


def parse_adaptive(table: Any, seed_counts: list[int], confidence: float) -> AdaptiveSettings:
    """``[adaptive]`` as settings; ``seed_counts``: the seed-list length of every method table (seeds_max
    may not exceed the shortest); ``confidence``: the ``[report]`` criterion's (an interval is needed).

    Raises a one-line :class:`SpecError` naming ``adaptive.KEY``.
    """
    s = from_table(AdaptiveSettings, table, "adaptive")
    have = min(seed_counts)
    if s.seeds_max > have:
        raise SpecError("adaptive.seeds_max", f"at most the number of seeds every method lists ({have}), got "
                        f"{s.seeds_max}; list more seeds in seeds = [...]")
    if s.seeds_min > have:
        raise SpecError("adaptive.seeds_min", f"at most the number of seeds every method lists ({have}), got "
                        f"{s.seeds_min}")
    if confidence <= 0:
        raise SpecError("adaptive", "[report] confidence > 0: an adaptive study decides on intervals, not on "
                        "point estimates")
    seeds_max = s.seeds_max or have
    if seeds_max < s.seeds_min:
        raise SpecError("adaptive.seeds_max", f"an integer >= seeds_min ({s.seeds_min}), got {seeds_max}")
    return AdaptiveSettings(seeds_min=s.seeds_min, seeds_max=seeds_max, budget_hours=s.budget_hours, looks=s.looks)
