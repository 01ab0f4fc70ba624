"""What every written report file says about itself: the tool's version, when it was written and the hash of
the grid it reports (so a file found later can be matched to its grid and code)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


def tool_version() -> str:
    """dlth-orch's version from its package metadata (``unknown`` when it is not installed)."""
    try:
        return importlib.metadata.version("dlth-orch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Stamp:
    """Version, time (UTC, ISO 8601) and the grids' spec hashes (``{}`` for an external table alone)."""

    grid_hashes: dict[str, str] = field(default_factory=dict)
    version: str = field(default_factory=tool_version)
    written_at: str = field(default_factory=_now)

    def line(self) -> str:
        """``written by dlth-orch 0.1.0 at 2026-12-06T06:40:00Z; grid quickstart (spec hash 1a2b...)``."""
        grids = "; ".join(f"grid {g} (spec hash {h})" for g, h in self.grid_hashes.items())
        return f"written by dlth-orch {self.version} at {self.written_at}" + (f"; {grids}" if grids else "")

    def to_dict(self) -> dict[str, Any]:
        return {"tool": "dlth-orch", **asdict(self)}
