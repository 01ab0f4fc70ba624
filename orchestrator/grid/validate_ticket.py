"""Validating a grid's ``strategy = "ticket"`` subsets (``subsets/ticket.py``), before any database is read.

A ticket takes no ``fraction`` (it is the earlier grid's subset as it was), and an audited ticket (``audit = N``)
does not go with ``[adaptive]``. A grid whose ticket is audited but that has no reference subset gets one:
``[report] reference`` (default ``full``) with ``strategy = "full"``, running only the configurations the
audit chooses (:func:`orchestrator.adaptive.audit.audit_jobs`).
"""

from __future__ import annotations

from typing import Any

from specs.base import SpecError
from subsets.ticket import TICKET


def audited(subsets: dict[str, dict[str, Any]]) -> list[str]:
    """The ticket subsets with ``audit`` > 0."""
    return [n for n, t in subsets.items() if t.get("strategy") == TICKET and t.get("audit", 0) > 0]


def check_tickets(subsets: dict[str, dict[str, Any]], reference: str, adaptive: bool) -> frozenset[str]:
    """Check the grid's ticket tables (canonical, validated) and add the reference an audited ticket needs when
    the grid has none; returns the subsets that only run the audit's configurations."""
    for name, table in subsets.items():
        if table.get("strategy") == TICKET and "fraction" in table:
            raise SpecError(f"subsets.{name}.fraction", "no fraction on a ticket: it is the earlier grid's subset as "
                            "it ran (its own fraction included)")
    checked = audited(subsets)
    if checked and adaptive:
        raise SpecError("adaptive", f"no [adaptive] table in a grid whose ticket is audited (subsets.{checked[0]}."
                        "audit): the audit chooses once the ticket's results are in")
    if checked and reference not in subsets:
        subsets[reference] = {"strategy": "full"}
        return frozenset({reference})
    tickets = [n for n, t in subsets.items() if t.get("strategy") == TICKET]
    if tickets and reference not in subsets:
        raise SpecError("report.reference", f"the name of a subset to rank against (have {', '.join(subsets)}), or "
                        f"audit = N on subsets.{tickets[0]}: N of its configurations also run on {reference}")
    return frozenset()
