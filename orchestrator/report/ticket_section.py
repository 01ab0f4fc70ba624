"""The report's "Dataset lottery ticket" section, for a grid that reused an earlier grid's recommended subset
(``strategy = "ticket"``): where the ticket came from (as recorded when it was taken), whether its audit
agrees with it (the audited configurations' order on the reference vs on the ticket: Kendall tau and the
pairs in the same order, with the report's own statistics) and what running on the ticket saved against
running every configuration on the reference (device-hours measured from the jobs' attempts, scaled to all
configurations: an estimate)."""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any

import numpy as np

from db import Store
from orchestrator.adaptive.audit import AuditChoice, recorded_audit
from orchestrator.grid.ticket import recorded_tickets
from orchestrator.report.fmt import hours_text, num
from orchestrator.report.ranking import Report
from orchestrator.report.sections import EXTRA_SECTIONS, Section
from orchestrator.report.statistics import ConfigStat, SubsetReport, compare_rankings, competition_ranks
from subsets.ticket import TicketSource

TITLE = "Dataset lottery ticket"


def with_ticket(report: Report, store: Store, grids: list[str]) -> Report:
    """``report`` with its (single) grid's tickets: their source, audit, agreement and saving."""
    row = store.get_grid(grids[0]) if len(grids) == 1 else None
    sources = recorded_tickets(row.spec_json) if row is not None else {}
    if not sources:
        return report
    audits = recorded_audit(store, grids[0])
    return replace(report, tickets=tuple(ticket_entry(report, name, src, audits.get(name))
                                         for name, src in sources.items()))


def ticket_entry(report: Report, name: str, source: TicketSource, audit: AuditChoice | None) -> dict[str, Any]:
    """One ticket as the section shows it (plain JSON values, kept in report.json)."""
    entry: dict[str, Any] = {"subset": name, "source": source.to_dict(), "audit": None, "agreement": None,
                             "saving": None}
    subsets = {s.subset: s for s in report.subsets}
    ticket, ref = subsets.get(name), subsets.get(report.reference)
    if audit is not None:
        entry["audit"] = {"configs": list(audit.labels), "ranks": list(audit.ranks), "ranked": audit.ranked,
                          "reference": audit.reference, "chosen_at": audit.chosen_at}
        if ticket is not None and ref is not None:
            entry["agreement"] = agreement(report, ticket, ref, audit)
    if ticket is not None and ref is not None:
        entry["saving"] = saving(ticket, ref, audit)
    return entry


def agreement(report: Report, ticket: SubsetReport, ref: SubsetReport, audit: AuditChoice) -> dict[str, Any] | None:
    """The audited configurations' order on the reference vs on the ticket (None until they have results)."""
    on_ticket = {c.config_key: c for c in ticket.configs if c.mean is not None}
    on_ref = {c.config_key: c for c in ref.configs if c.mean is not None}
    keys = [k for k in audit.configs if k in on_ticket and k in on_ref]
    if len(keys) < 2:
        return None
    labels = [on_ticket[k].config for k in keys]
    crit = report.decision.criterion if report.decision is not None else None
    rng = np.random.default_rng([report.seed, zlib.crc32(b"ticket-audit")])
    cons = compare_rankings(labels, [_values(on_ticket[k]) for k in keys], [_values(on_ref[k]) for k in keys],
                            top_k=1, higher_is_better=report.higher_is_better, n_boot=report.bootstrap, rng=rng,
                            level=crit.level() if crit is not None else 0.95)
    pairs = len(keys) * (len(keys) - 1) // 2
    same = (cons.pairwise_agreement or 0.0) * pairs
    min_tau = crit.min_tau if crit is not None else 1.0
    agrees = cons.kendall_tau >= min_tau if cons.kendall_tau is not None else same == pairs
    hib = report.higher_is_better
    ranks_t = competition_ranks([on_ticket[k].mean for k in keys], hib)  # type: ignore[misc]
    ranks_r = competition_ranks([on_ref[k].mean for k in keys], hib)  # type: ignore[misc]
    return {"configs": labels, "tau": cons.kendall_tau, "tau_ci": cons.kendall_tau_ci, "pairs": pairs,
            "same_order": same, "agrees": bool(agrees), "min_tau": min_tau,
            "rows": [[label, rt, on_ticket[k].mean, rr, on_ref[k].mean]
                     for label, k, rt, rr in zip(labels, keys, ranks_t, ranks_r, strict=True)]}


def saving(ticket: SubsetReport, ref: SubsetReport, audit: AuditChoice | None) -> dict[str, Any]:
    """Device-hours: every job of the ticket run on the reference (its measured cost per job, scaled) vs what
    the ticket and the audit took. An estimate: the reference's cost per job is measured on its jobs only."""
    out: dict[str, Any] = {"jobs": ticket.jobs_total, "unit": ticket.cost_unit or ref.cost_unit,
                           "ref_per_job": ref.cost_hours_per_job, "ticket_hours": ticket.cost_hours,
                           "audit_jobs": ref.jobs_total, "audit_hours": ref.cost_hours, "note": None}
    chosen = set(audit.configs) if audit is not None else set()
    full_grid = any(c.config_key not in chosen for c in ref.configs)  # the reference runs more than the audit
    out["reference_runs_all"] = full_grid
    if ref.cost_hours_per_job is None or ticket.cost_hours is None:
        out["note"] = "no measured cost (no attempts recorded) for " + (ref.subset if ticket.cost_hours is not None
                                                                        else ticket.subset)
        return out
    if ticket.cost_unit and ref.cost_unit and ticket.cost_unit != ref.cost_unit:
        out["note"] = f"not comparable: {ticket.subset} is measured in {ticket.cost_unit}, {ref.subset} in " \
                      f"{ref.cost_unit}"
        return out
    audit_jobs = sum(c.n_expected for c in ref.configs if c.config_key in chosen)
    audit_hours = ref.cost_hours_per_job * audit_jobs if full_grid else (ref.cost_hours or 0.0)
    all_on_ref = ref.cost_hours_per_job * ticket.jobs_total
    spent = ticket.cost_hours + audit_hours
    out.update(audit_jobs=audit_jobs, audit_hours=audit_hours, all_on_ref=all_on_ref, spent=spent,
               saved=all_on_ref - spent, factor=all_on_ref / spent if spent > 0 else None)
    return out


def _values(c: ConfigStat) -> dict[int, float]:
    return dict(zip(c.seeds, c.values, strict=True))


def _source_lines(name: str, src: dict[str, Any]) -> list[str]:
    table = ", ".join(f"{k} = {v}" for k, v in src["subset_table"].items())
    state = (f"still running then ({src['jobs_completed']}/{src['jobs_total']} jobs completed): provisional"
             if src["provisional"] else f"{src['jobs_completed']}/{src['jobs_total']} jobs completed")
    return [f"{name} is the ticket of grid {src['grid']}: its report recommended {src['subset']} ({table}; manifest "
            f"{src['manifest_hash']}), {state}; taken {src['taken_at'].replace('T', ' ')} and recorded with this "
            "grid, so this holds even if that grid changes since",
            f"{src['grid']} decided: {src['decision']} (criterion: {src['criterion']})"]


def _audit_lines(entry: dict[str, Any]) -> list[str]:
    src, audit, agree = entry["source"], entry["audit"], entry["agreement"]
    if not src["audit"]:
        return ["no audit (audit = 0): no configuration of this grid was checked on the reference"]
    if audit is None:
        return [f"audit: {src['audit']} configurations to run on the reference once the ticket's results are in "
                "(not chosen yet)"]
    picks = ", ".join(f"{c} (rank {r})" for c, r in zip(audit["configs"], audit["ranks"], strict=True))
    lines = [f"audit: {len(audit['configs'])} of {audit['ranked']} configurations also ran on {audit['reference']}, "
             f"chosen after the ticket's results across its ranking (best to worst): {picks}"]
    if agree is None:
        lines.append("agreement: not yet (the audited configurations have no results on the reference)")
        return lines
    tau = "undefined" if agree["tau"] is None else f"{agree['tau']:.3f}"
    verdict = "AGREES with" if agree["agrees"] else "DISAGREES with"
    rule = f">= {agree['min_tau']:g}" if agree["agrees"] else f"needs >= {agree['min_tau']:g}"
    lines.append(f"the audit {verdict} the ticket: Kendall tau {tau} ({rule}, the grid's min_tau) over "
                 f"{len(agree['configs'])} configurations; {agree['same_order']:g} of {agree['pairs']} pairs in the "
                 "same order on both")
    return lines


def _saving_line(entry: dict[str, Any]) -> str | None:
    s = entry["saving"]
    if s is None:
        return None
    if s["note"]:
        return f"saving: unknown ({s['note']})"
    unit = s["unit"]
    factor = f", {s['factor']:.1f}x cheaper" if s["factor"] and s["factor"] >= 1 else ""
    est = (f"running all {s['jobs']} jobs on the reference would take ~{hours_text(s['all_on_ref'], unit)} "
           f"({hours_text(s['ref_per_job'], unit)} per job, measured); the ticket took "
           f"{hours_text(s['ticket_hours'], unit)} and the audit's {s['audit_jobs']} jobs "
           f"{hours_text(s['audit_hours'], unit)}")
    if s["reference_runs_all"]:
        return (f"saving (an estimate): none in this grid, which runs every configuration on the reference too; "
                f"a grid with only the ticket and its audit: {est}, saving ~{hours_text(s['saved'], unit)}{factor}")
    return f"saving (an estimate): {est}: ~{hours_text(s['saved'], unit)} saved{factor}"


def ticket_section(report: Report) -> Section | None:
    """The "Dataset lottery ticket" block (None for a grid without a ticket)."""
    if not report.tickets:
        return None
    lines: list[str] = []
    rows: list[tuple[str, ...]] = []
    for entry in report.tickets:
        lines += _source_lines(entry["subset"], entry["source"]) + _audit_lines(entry)
        if (line := _saving_line(entry)) is not None:
            lines.append(line)
        agree = entry["agreement"]
        for label, rt, mt, rr, mr in agree["rows"] if agree else ():
            rows.append((label, str(rt), num(mt, 4), str(rr), num(mr, 4)))
    header = ("audited configuration", "rank on ticket", "mean on ticket", "rank on reference",
              "mean on reference") if rows else ()
    return Section(TITLE, tuple(lines), header, tuple(rows))


EXTRA_SECTIONS.append(ticket_section)
