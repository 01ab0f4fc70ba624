"""A ticket's audit (``audit = N`` on a ``strategy = "ticket"`` subset): N of the grid's configurations also run on
the reference, chosen across the ticket's ranking (best, middle, worst) once the ticket's results are in.

Choosing after the results is the honest way: configurations picked before them could not span the ticket's
ranking, and an audit of only neighbours says little. The choice is a step of the adaptive controller
(:func:`orchestrator.adaptive.controller.step`, inside ``launch`` and ``dlth-orch advance``): when the grid is
idle and no audit was chosen, rank the configurations by their mean over the completed seeds on the ticket
(the report's competition ranks), take N evenly spaced ranks from best to worst, record the choice
(``dlth_meta`` ``audit/<grid>``, once) and record the grid again: :func:`audit_jobs` then lets the chosen
configurations' jobs on an audit-only reference through (a grid without a reference subset gets one, see
``orchestrator/grid/validate_ticket.py``; a grid with one runs every configuration on it anyway).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from db import JobState, Store

if TYPE_CHECKING:
    from orchestrator.grid import ExpandedJob, GridSpec
    from orchestrator.report.ranking import JobResult

log = logging.getLogger(__name__)
_KEY = "audit/{}"  # dlth_meta: the grid's audit choices, {ticket subset: AuditChoice}


@dataclass(frozen=True)
class AuditChoice:
    """The configurations a ticket's audit runs on the reference, best first on the ticket."""

    ticket: str  # the ticket subset
    reference: str
    configs: tuple[str, ...]  # configuration keys
    labels: tuple[str, ...]
    ranks: tuple[int, ...]  # their ranks on the ticket (1 = best)
    ranked: int  # configurations ranked on the ticket when the audit chose
    chosen_at: str

    @classmethod
    def from_dict(cls, d: dict) -> AuditChoice:
        return cls(**{**d, **{k: tuple(d[k]) for k in ("configs", "labels", "ranks")}})


def spread(n_ranked: int, n: int) -> list[int]:
    """``n`` positions spread evenly over ``n_ranked`` ranked items, first and last included (all when n >=
    n_ranked): 3 of 5 -> 0, 2, 4 (best, middle, worst)."""
    if n >= n_ranked:
        return list(range(n_ranked))
    if n == 1:
        return [0]
    return sorted({math.floor(i * (n_ranked - 1) / (n - 1) + 0.5) for i in range(n)})


def choose(rows: Sequence[JobResult], ticket: str, reference: str, n: int, metric: str,
           higher_is_better: bool) -> AuditChoice:
    """Choose ``n`` configurations across the ticket's ranking (completed seeds' mean of ``metric``)."""
    from orchestrator.report.statistics import competition_ranks  # the report's ranks (scipy)

    values: dict[str, list[float]] = {}
    labels: dict[str, str] = {}
    for r in rows:
        value = r.metrics.get(metric)
        if r.subset == ticket and r.state == JobState.COMPLETED and value is not None and math.isfinite(value):
            values.setdefault(r.config_key, []).append(float(value))
            labels[r.config_key] = r.config
    keys = sorted(values)
    means = [sum(values[k]) / len(values[k]) for k in keys]
    ranks = dict(zip(keys, competition_ranks(means, higher_is_better), strict=True)) if keys else {}
    order = sorted(keys, key=lambda k: (ranks[k], labels[k]))
    picked = [order[i] for i in spread(len(order), n)]
    return AuditChoice(ticket, reference, tuple(picked), tuple(labels[k] for k in picked),
                       tuple(ranks[k] for k in picked), len(order), datetime.now(UTC).isoformat(timespec="seconds"))


def recorded_audit(store: Store, grid_name: str) -> dict[str, AuditChoice]:
    """The grid's audit choices so far, by ticket subset (``{}``: none yet)."""
    raw = store.get_meta(_KEY.format(grid_name))
    try:
        doc = json.loads(raw) if raw else {}
        return {name: AuditChoice.from_dict(d) for name, d in doc.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("%s: its recorded audit choice cannot be read; choosing again", grid_name)
        return {}


def audit_jobs(store: Store, grid: GridSpec, jobs: Sequence[ExpandedJob]) -> list[ExpandedJob]:
    """``jobs`` without those of an audit-only reference whose configuration no audit chose (yet)."""
    if not grid.audit_only:
        return list(jobs)
    chosen = {k for c in recorded_audit(store, grid.name).values() for k in c.configs}
    return [ej for ej in jobs if ej.subset_name not in grid.audit_only or ej.spec.config_key in chosen]


def audit_step(store: Store, grid: GridSpec, record: Callable[[], object]) -> tuple[str, bool]:
    """Choose the audits not chosen yet, once the grid is idle (the caller holds its lock; ``record`` records
    its jobs). Returns (what it did, whether it added jobs to run)."""
    record()
    audited = {name: t.audit for name, t in grid.tickets.items() if t.audit}
    done = recorded_audit(store, grid.name)
    todo = [name for name in audited if name not in done]
    if not todo:
        return "audit: " + "; ".join(describe(c) for c in done.values()), False
    busy = store.jobs(grid.name, JobState.UNFINISHED)  # type: ignore[attr-defined]
    if busy:
        return f"audit: waiting for {len(busy)} jobs before choosing", False
    from orchestrator.results import grid_results

    rows = grid_results(store, grid.name)
    for name in todo:
        choice = choose(rows, name, grid.report.reference, audited[name], grid.report.metric,
                        grid.report.higher_is_better)
        if choice.configs:
            done[name] = choice
    if not any(name in done for name in todo):
        return f"audit: no configuration has a result on {', '.join(todo)} to choose from", False
    store.set_meta(_KEY.format(grid.name), json.dumps({n: asdict(c) for n, c in done.items()}, sort_keys=True))
    before = len(store.jobs(grid.name))
    record()
    added = len(store.jobs(grid.name)) - before
    said = "; ".join(describe(done[n]) for n in todo if n in done)
    log.info("%s: %s", grid.name, said)
    return f"audit: {said} ({added} jobs added)", True


def describe(c: AuditChoice) -> str:
    """One audit choice in words."""
    picks = ", ".join(f"{label} (rank {rank})" for label, rank in zip(c.labels, c.ranks, strict=True))
    return f"{len(c.configs)} of {c.ranked} configurations of {c.ticket} on {c.reference}: {picks}"
