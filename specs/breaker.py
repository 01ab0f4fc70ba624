"""The breaker's rule, shared by the orchestrator and the workers (torch- and database-free): when the *first*
attempts of several different jobs of a grid fail with the same error, the grid is paused instead of
burning its whole failure budget. This module *decides*; the store persists (``Store.trip_breaker``) and
:mod:`orchestrator.breaker` acts on SLURM.

- Same error: the attempt's one-line ``exit_reason`` (see :mod:`workers.errors`) with numbers, paths and
  hex strings normalised (:func:`normalise`). Only first attempts (never retries of one job) and only
  failures the job itself caused (FAILED, OUT_OF_MEMORY; not a lost process or a node failure) count,
  so one flaky job never trips it.
- Settings: the grid's ``[breaker]`` table: ``threshold`` (distinct jobs, default 3, at least 2) and
  ``enabled`` (default true).
- State: the ``dlth_meta`` key ``breaker:<grid>`` (JSON, :class:`BreakerState`), no schema of its own.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol

from specs.base import SpecError
from specs.lifecycle import AttemptState

COUNTED = (AttemptState.FAILED, AttemptState.OUT_OF_MEMORY)
DEFAULT_THRESHOLD = 3
_HEX = re.compile(r"\b(0x[0-9a-fA-F]+|[0-9a-fA-F]{8,})\b")
_PATH = re.compile(r"(?<![\w.])(/[^\s:'\",)]+)")
_NUM = re.compile(r"\d+(\.\d+)?")


class Attempt(Protocol):
    """What the rule reads of an attempt (``db.AttemptRow`` has it)."""

    id: int
    job_hash: str
    number: int
    state: str
    exit_reason: str | None


@dataclass(frozen=True)
class BreakerSettings:
    threshold: int = DEFAULT_THRESHOLD  # distinct jobs whose first attempt failed with the same error
    enabled: bool = True

    @classmethod
    def from_table(cls, table: Any, source: str | None = None) -> BreakerSettings:
        """From a grid's ``[breaker]`` table; :class:`SpecError` naming the key for a bad value."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise SpecError("breaker", "a table (threshold, enabled)", source)
        unknown = sorted(set(table) - {"threshold", "enabled"})
        if unknown:
            raise SpecError(f"breaker.{unknown[0]}", "one of threshold, enabled", source)
        threshold = table.get("threshold", DEFAULT_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 2:
            raise SpecError("breaker.threshold", f"an integer >= 2 (got {threshold!r})", source)
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise SpecError("breaker.enabled", f"true or false (got {enabled!r})", source)
        return cls(threshold=threshold, enabled=enabled)

    @classmethod
    def of_grid(cls, spec_json: str, source: str | None = None) -> BreakerSettings:
        """The settings of a recorded grid (its spec JSON)."""
        return cls.from_table(json.loads(spec_json).get("breaker"), source)


@dataclass
class BreakerState:
    paused: bool = False
    error: str = ""  # the first job's error line, as recorded
    jobs: list[str] = field(default_factory=list)
    since: str = ""
    resumed_after: int = 0  # attempts with an id up to this one no longer count (set by resume)
    held: list[str] = field(default_factory=list)  # the SLURM tasks the breaker held (released by resume)
    by: str = ""  # who tripped it: "the orchestrator" or "the worker of <job>"
    hold_pending: bool = False  # tripped where SLURM cannot be reached: the next orchestrator look holds

    @classmethod
    def from_json(cls, raw: str | None) -> BreakerState:
        if not raw:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(raw).items() if k in known})

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def meta_key(grid: str) -> str:
    return f"breaker:{grid}"


def normalise(line: str) -> str:
    """``line`` with paths, hex strings and numbers replaced by placeholders (the error's *kind*)."""
    text = _PATH.sub("<path>", line.strip())
    text = _HEX.sub("<hex>", text)
    return _NUM.sub("<n>", text)


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def tripping_error(attempts: Iterable[Attempt], settings: BreakerSettings,
                   after: int = 0) -> tuple[str, list[str]] | None:
    """``(error line, jobs)`` of a systematic failure among a grid's ``attempts``, or None."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for a in sorted(attempts, key=lambda a: a.id):
        if a.number == 1 and a.id > after and a.state in COUNTED:
            line = _last_line(a.exit_reason) or a.state
            groups[normalise(line)].setdefault(a.job_hash, line)
    for jobs in groups.values():
        if len(jobs) >= settings.threshold:
            return next(iter(jobs.values())), sorted(jobs)
    return None


def trip(state: BreakerState, settings: BreakerSettings, attempts: Iterable[Attempt], by: str) -> bool:
    """Pause ``state`` (in place) if ``attempts`` show a systematic failure; True if it tripped now."""
    if state.paused or not settings.enabled:
        return False
    found = tripping_error(attempts, settings, state.resumed_after)
    if found is None:
        return False
    state.paused, state.error, state.jobs = True, found[0], found[1]
    state.since, state.by = datetime.now(UTC).replace(tzinfo=None).isoformat(), by
    return True


def pause_line(grid: str, state: BreakerState) -> str:
    """One line: the grid is paused, why, and how to resume it."""
    return (f"grid {grid} is PAUSED: the first attempts of {len(state.jobs)} jobs failed with the same error "
            f"({state.error}); fix it, then run: dlth-orch resume {grid}")
