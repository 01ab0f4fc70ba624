"""A breaker for systematic failures: when the *first* attempts of several different jobs of a grid fail
with the same error, the grid is paused instead of burning its whole failure budget.

- Same error: the attempt's one-line ``exit_reason`` (see :mod:`workers.errors`) with numbers, paths and
  hex strings normalised (:func:`normalise`). Only first attempts (never retries of one job) and only
  failures the job itself caused (FAILED, OUT_OF_MEMORY; not a lost process or a node failure) count,
  so one flaky job never trips it.
- Paused: the local backend starts nothing new; on SLURM the grid's pending tasks are held with
  ``scontrol hold`` (never cancelled) and nothing is resubmitted. ``status`` and ``launch --wait`` say so in
  one line (:func:`pause_line`). ``dlth-orch resume GRID`` (after a fix) releases the held tasks with
  ``scontrol release``; failures from before the resume no longer count.
- Settings: the grid's ``[breaker]`` table: ``threshold`` (distinct jobs, default 3, at least 2) and
  ``enabled`` (default true).
- State: the ``dlth_meta`` key ``breaker:<grid>`` (JSON), no schema of its own.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from db import AttemptState, JobState, Store
from db.models import utcnow
from specs.base import SpecError

log = logging.getLogger(__name__)
COUNTED = (AttemptState.FAILED, AttemptState.OUT_OF_MEMORY)
DEFAULT_THRESHOLD = 3
_HEX = re.compile(r"\b(0x[0-9a-fA-F]+|[0-9a-fA-F]{8,})\b")
_PATH = re.compile(r"(?<![\w.])(/[^\s:'\",)]+)")
_NUM = re.compile(r"\d+(\.\d+)?")


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


@dataclass
class BreakerState:
    paused: bool = False
    error: str = ""  # the first job's error line, as recorded
    jobs: list[str] = field(default_factory=list)
    since: str = ""
    resumed_after: int = 0  # attempts with an id up to this one no longer count (set by resume)
    held: list[str] = field(default_factory=list)  # the SLURM tasks the breaker held (released by resume)

    @classmethod
    def load(cls, store: Store, grid: str) -> BreakerState:
        raw = store.get_meta(meta_key(grid))
        if not raw:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(raw).items() if k in known})

    def save(self, store: Store, grid: str) -> None:
        store.set_meta(meta_key(grid), json.dumps(asdict(self)))


def meta_key(grid: str) -> str:
    return f"breaker:{grid}"


def normalise(line: str) -> str:
    """``line`` with paths, hex strings and numbers replaced by placeholders (the error's *kind*)."""
    text = _PATH.sub("<path>", line.strip())
    text = _HEX.sub("<hex>", text)
    return _NUM.sub("<n>", text)


def settings_of(store: Store, grid: str) -> BreakerSettings:
    g = store.get_grid(grid)
    if g is None:
        return BreakerSettings()
    return BreakerSettings.from_table(json.loads(g.spec_json).get("breaker"), g.source_path)


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def tripping_error(store: Store, grid: str, settings: BreakerSettings, after: int = 0) -> tuple[str, list[str]] | None:
    """``(error line, jobs)`` of a systematic failure of ``grid``, or None."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for a in store.grid_attempts(grid):
        if a.number == 1 and a.id > after and a.state in COUNTED:
            line = _last_line(a.exit_reason) or a.state
            groups[normalise(line)].setdefault(a.job_hash, line)
    for jobs in groups.values():
        if len(jobs) >= settings.threshold:
            return next(iter(jobs.values())), sorted(jobs)
    return None


def check(store: Store, grid: str) -> BreakerState | None:
    """Trip the breaker if ``grid`` shows a systematic failure; returns the state if the grid is paused."""
    state = BreakerState.load(store, grid)
    if state.paused:
        return state
    settings = settings_of(store, grid)
    if not settings.enabled:
        return None
    found = tripping_error(store, grid, settings, state.resumed_after)
    if found is None:
        return None
    state.paused, state.error, state.jobs, state.since = True, found[0], found[1], utcnow().isoformat()
    state.held = _slurm_queued_ids(store, grid)
    state.save(store, grid)  # saved before the hold: a crash in between leaves nothing held unrecorded
    _scontrol("hold", state.held)  # a task that started meanwhile is refused; the others are held
    log.warning("%s", pause_line(grid, state) + (f" ({len(state.held)} SLURM tasks held)" if state.held else ""))
    return state


def paused(store: Store, grid: str) -> BreakerState | None:
    """The grid's breaker state if it is paused, else None (no check, no action)."""
    state = BreakerState.load(store, grid)
    return state if state.paused else None


def _slurm_queued_ids(store: Store, grid: str) -> list[str]:
    return sorted({j.backend_id for j in store.jobs(grid, [JobState.QUEUED])
                   if j.backend == "slurm" and j.backend_id})


def _scontrol(action: str, ids: list[str]) -> None:
    """``scontrol hold|release`` of SLURM tasks, 500 per command; without SLURM here, a warning."""
    if not ids:
        return
    from orchestrator.backends.slurm_cmd import SlurmError, run_slurm

    try:
        for i in range(0, len(ids), 500):
            run_slurm(["scontrol", action, ",".join(ids[i:i + 500])], check=False)
    except SlurmError as exc:
        log.warning("cannot %s the grid's SLURM tasks from here (%s): run this on the SLURM login node", action, exc)


def resume(store: Store, grid: str) -> int:
    """Unpause ``grid`` and ``scontrol release`` its held SLURM tasks (those the breaker held, and any
    other queued task of the grid); returns how many tasks were released."""
    state = BreakerState.load(store, grid)
    attempts = store.grid_attempts(grid)
    ids = sorted(set(state.held) | set(_slurm_queued_ids(store, grid)))
    state.paused, state.held = False, []
    state.resumed_after = max((a.id for a in attempts), default=0)
    _scontrol("release", ids)
    state.save(store, grid)
    return len(ids)


def pause_line(grid: str, state: BreakerState) -> str:
    """One line: the grid is paused, why, and how to resume it."""
    return (f"grid {grid} is PAUSED: the first attempts of {len(state.jobs)} jobs failed with the same error "
            f"({state.error}); fix it, then run: dlth-orch resume {grid}")
