"""Taking a grid's tickets (``strategy = "ticket"``, ``subsets/ticket.py``) from the database: the last step of
validation, after the grid file is read and before anything is expanded or recorded.

For each ticket subset the earlier grid named by ``from`` must be recorded in the same database, on the same
dataset, and its report (the report's own decision code, on its recorded results and ``[report]`` criterion)
must recommend a subset. The ticket then stands for that subset's recorded table, so it resolves to exactly
the earlier grid's classes and images (checked against the recorded manifest hash when the dataset is
there) and its jobs have the identities of a grid that spells the subset out. Anything else is one line
naming the grid file, ``subsets.NAME.from`` and what was expected; nothing is written.

A ticket is taken once: a grid that recorded its ticket (``tickets`` in its recorded spec) keeps it on every
relaunch, even if the earlier grid's report changes since.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from db import Store, StoreError, require_database
from orchestrator.grid.spec import GridSpec
from specs.base import SpecError
from subsets import DatasetMeta, SubsetError, resolve
from subsets.ticket import TICKET, TicketSource

log = logging.getLogger(__name__)


def ticket_names(grid: GridSpec) -> list[str]:
    """The grid's subsets that are tickets not taken yet."""
    return [n for n, t in grid.subsets.items() if t.get("strategy") == TICKET]


def take_tickets(grid: GridSpec, db_url: str) -> GridSpec:
    """``grid`` with each ticket replaced by the subset its earlier grid recommends (:class:`TicketSource` in
    ``grid.tickets``); the grid itself when it has none. Raises a one-line :class:`SpecError` naming the file."""
    names = ticket_names(grid)
    if not names:
        return grid
    try:
        sources = _sources(grid, names, db_url)
        taken = replace(grid, subsets={**grid.subsets, **{n: s.table() for n, s in sources.items()}},
                        tickets=sources)
        _check_manifests(taken)
    except SpecError as exc:
        raise exc.in_file(str(grid.path)) from None
    return taken


def recorded_tickets(spec_json: str) -> dict[str, TicketSource]:
    """The tickets a grid recorded (its ``spec_json``'s ``tickets``); ``{}`` when it has none."""
    try:
        doc = json.loads(spec_json).get("tickets") or {}
        return {name: TicketSource.from_dict(d) for name, d in doc.items()}
    except (ValueError, AttributeError, TypeError):
        return {}


def _sources(grid: GridSpec, names: list[str], db_url: str) -> dict[str, TicketSource]:
    try:
        require_database(db_url)
        store = Store(db_url, create=False)
    except StoreError as exc:
        raise SpecError(f"subsets.{names[0]}.from", f"a grid recorded in the database ({exc})") from None
    try:
        row = store.get_grid(grid.name)
        pinned = recorded_tickets(row.spec_json) if row is not None else {}
        out = {}
        for name in names:
            table = grid.subsets[name]
            old = pinned.get(name)
            if old is not None and old.grid == table["from"]:  # taken at the first launch: kept
                out[name] = replace(old, audit=table["audit"])
            else:
                out[name] = take_ticket(store, grid, name, table)
        return out
    finally:
        store.close()


def take_ticket(store: Store, grid: GridSpec, name: str, table: dict[str, Any]) -> TicketSource:
    """The subset the report of grid ``table["from"]`` recommends, as a :class:`TicketSource` for ``name``."""
    key, source = f"subsets.{name}.from", table["from"]
    if source == grid.name:
        raise SpecError(key, "an earlier grid, not this one")
    earlier = store.get_grid(source)
    if earlier is None:
        have = sorted(g.name for g in store.list_grids())
        listed = ", ".join(have[:10]) + (", ..." if len(have) > 10 else "") if have else "none"
        raise SpecError(key, f"a grid recorded in the database (no grid '{source}'; recorded: {listed})")
    rows = store.jobs(source)
    if rows:
        root = json.loads(rows[0].spec_json).get("dataset_root")
        if root != grid.dataset_root:
            raise SpecError(key, f"a grid on this grid's dataset ({grid.dataset_root}); '{source}' ran on {root}")
    from orchestrator.results import ReportRequest, assemble_report  # the report's decision (scipy)

    try:
        report = assemble_report(store, ReportRequest(grids=[source]))
    except ValueError as exc:
        raise SpecError(key, f"a grid whose report recommends a subset ('{source}': no report: "
                        f"{str(exc).splitlines()[0]})") from None
    decision = report.decision
    finished = store.grid_finished(source)
    if decision is None or decision.recommended is None:
        said = decision.headline if decision is not None else "no decision"
        if decision is not None and decision.closest:
            said += f" (closest: {decision.closest})"
        if not finished:
            raise SpecError(key, f"a grid whose report has decided ('{source}' is still running, "
                            f"{report.jobs_completed}/{report.jobs_total} jobs completed; its report says: {said})")
        raise SpecError(key, f"a grid whose report recommends a subset ('{source}''s report says: {said})")
    spec = json.loads(next(r.spec_json for r in rows if r.subset_name == decision.recommended))
    if not finished:
        log.warning("%s: the ticket of %s is provisional: %s is still running (%d/%d jobs completed)", grid.name,
                    name, source, report.jobs_completed, report.jobs_total)
    return TicketSource(
        grid=source, subset=decision.recommended, subset_table=dict(spec["subset"]),
        manifest_hash=str(spec["manifest_hash"]), decision=decision.headline,
        criterion=decision.criterion.describe(), jobs_completed=report.jobs_completed, jobs_total=report.jobs_total,
        dataset_root=str(spec["dataset_root"]), taken_at=datetime.now(UTC).isoformat(timespec="seconds"),
        audit=int(table["audit"]), provisional=not finished, details=tuple(decision.details),
    )


def _check_manifests(grid: GridSpec) -> None:
    """Each ticket resolves to its earlier grid's exact manifest (when the dataset is there to resolve it)."""
    root = Path(grid.dataset_root)
    if not (root / "meta.json").is_file():
        return  # a builtin dataset not built yet: the launch builds it, and the job identities tell
    meta = DatasetMeta.load(root)
    for name, source in grid.tickets.items():
        try:
            source.check(name, resolve(name, grid.subsets[name], meta))
        except SubsetError as exc:
            raise SpecError(f"subsets.{name}.{exc.key}", exc.expected) from None
