"""A grid's ``[storage]`` table: ``keep = "final" | "best" | "none"`` applied as its jobs finish."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from specs.base import SpecError

KEEP = ("final", "best", "none")


@dataclass(frozen=True)
class StorageSettings:
    """``keep``: None = collect nothing by itself (``dlth-orch gc`` still can); else the gc policy."""

    keep: str | None = None

    @classmethod
    def from_table(cls, table: Any, source: str | None = None) -> StorageSettings:
        """From a grid's ``[storage]`` table; a one-line :class:`SpecError` naming the key otherwise."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise SpecError("storage", "a table (keep)", source)
        unknown = sorted(set(table) - {"keep"})
        if unknown:
            raise SpecError(f"storage.{unknown[0]}", "keep", source)
        keep = table.get("keep")
        if keep not in KEEP:
            raise SpecError("storage.keep", f"one of {', '.join(KEEP)} (got {keep!r})", source)
        return cls(keep=keep)

    @classmethod
    def of_grid(cls, spec_json: str) -> StorageSettings:
        """The settings of a recorded grid (its spec JSON)."""
        return cls.from_table(json.loads(spec_json).get("storage"))
