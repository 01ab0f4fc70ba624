"""Pieces every form of the report shows (terminal, Markdown, HTML), as plain text and tables.

Other features plug into the report here, not into the renderers: append a function to
:data:`HEADER_LINES` (one line under the title, e.g. the evaluation protocol) or to
:data:`EXTRA_SECTIONS` (a titled block of lines and an optional table, e.g. a lottery section). Each
function takes the :class:`Report` and returns None when it has nothing to say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.report.ranking import Report


@dataclass(frozen=True)
class Section:
    """A titled block: lines of text, then an optional table."""

    title: str
    lines: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = field(default=())


HEADER_LINES: list[Callable[[Report], str | None]] = []
EXTRA_SECTIONS: list[Callable[[Report], Section | None]] = []


def header_lines(report: Report) -> list[str]:
    """The lines the registered header functions add under the title."""
    return [line for fn in HEADER_LINES if (line := fn(report))]


def extra_sections(report: Report) -> list[Section]:
    """The registered extra sections (after the recommendation and the summary)."""
    return [sec for fn in EXTRA_SECTIONS if (sec := fn(report)) is not None]


def _hours(x: float | None) -> str:
    return "—" if x is None else f"{x:,.3g}" if x < 1000 else f"{x:,.0f}"


def plan_line(report: Report) -> str | None:
    """``--plan NxS``: hours on the reference vs on the recommended (or closest) subset."""
    p = report.plan
    if p is None:
        return None
    head = f"Plan {p.configs} configurations x {p.seeds} seeds ({p.configs * p.seeds} jobs): "
    if p.note and p.factor is None:
        ref = f"{_hours(p.reference_hours)} {p.unit} on {report.reference}" if p.reference_hours is not None else ""
        return head + (ref + "; " if ref else "") + p.note
    which = "recommended" if p.recommended else "closest, NOT meeting the criterion"
    saving = f"{p.factor:.1f}x cheaper" if p.factor >= 1 else f"{1 / p.factor:.1f}x dearer"
    return (head + f"{_hours(p.reference_hours)} {p.unit} on {report.reference} vs {_hours(p.subset_hours)} "
            f"on {p.subset} ({which}): {saving}")


def recommendation(report: Report) -> Section:
    """The decision: headline, details, the criterion and the plan; first in every form."""
    d = report.decision
    if d is None:
        return Section("Recommendation", ("No recommendation computed.",))
    lines = [d.headline, *d.details, f"criterion: {d.criterion.describe()} (set by [report] min_tau, confidence, "
             "max_regret or --criterion)"]
    if not report.complete:
        lines.insert(1, "provisional: the grid has unfinished jobs; the recommendation may change when they finish")
    if (pl := plan_line(report)) is not None:
        lines.append(pl)
    return Section("Recommendation", tuple(lines))
