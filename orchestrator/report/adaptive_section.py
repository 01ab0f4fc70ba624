"""What an adaptive study decided and why, for the report ("Adaptive study" section) and ``status`` (one
line): per look the seeds it added, the subsets it dropped (with the reason) and why it stopped."""

from __future__ import annotations

from dataclasses import replace

from db import Store
from orchestrator.adaptive.controller import recorded_looks
from orchestrator.adaptive.policy import CANNOT, Look
from orchestrator.report.ranking import Report
from orchestrator.report.sections import EXTRA_SECTIONS, Section


def _dropped_why(look: Look) -> str:
    why = {j.subset: j.why for j in look.judgements if j.state == CANNOT}
    return "; ".join(f"dropped {s} ({why.get(s, 'cannot meet')})" for s in look.drop)


def look_line(look: Look) -> str:
    """One look in words: its confidence, what it added and dropped (and why), and its stop."""
    parts = [f"look {look.number} (per-look confidence {look.confidence:.4g}, {look.hours:.3g} device-hours "
             "so far)"]
    if look.add:
        pairs = sorted({f"{a.subset}/{a.config}" for a in look.add})
        parts.append(f"+1 seed for {len(pairs)} (subset, configuration): " + ", ".join(pairs))
    if look.drop:
        parts.append(_dropped_why(look))
    if look.stop:
        rec = f", recommending {look.recommended}" if look.stop == "decided" and look.recommended else ""
        parts.append(f"stopped: {look.stop}{rec}")
    return "; ".join(parts)


def status_line(store: Store, grid_name: str) -> str | None:
    """``status``: the latest look of an adaptive grid (None for a grid without looks)."""
    looks = recorded_looks(store, grid_name)
    if not looks:
        return None
    dropped = [s for look in looks for s in look.drop]
    last = looks[-1]
    state = f"stopped ({last.stop})" if last.stop else f"running the seeds look {last.number} added"
    return f"{len(looks)} looks, {state}" + (f"; dropped: {', '.join(dropped)}" if dropped else "") + \
        f"; last: {look_line(last)}"


def with_adaptive(report: Report, store: Store, grids: list[str]) -> Report:
    """``report`` with the looks of its (single) adaptive grid."""
    if len(grids) != 1:
        return report
    lines = tuple(look_line(look) for look in recorded_looks(store, grids[0]))
    return replace(report, adaptive=lines) if lines else report


def adaptive_section(report: Report) -> Section | None:
    """The "Adaptive study" block: one line per look."""
    if not report.adaptive:
        return None
    head = ("seeds were added only where they could change the answer; the confidence is split over the "
            "study's looks (Bonferroni), so the recommendation above uses the report's own level")
    return Section("Adaptive study", (head, *report.adaptive))


EXTRA_SECTIONS.append(adaptive_section)
