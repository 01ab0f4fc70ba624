"""Gather the report's results: a grid's jobs from the store (jobs, metrics, attempts: one query each),
several grids side by side, and external result tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from db import Store
from db.models import utcnow
from orchestrator.report.cost import attempts_hours, devices_held, parse_plan, spec_resources
from orchestrator.report.decision import Criterion
from orchestrator.report.external import PREFIX, external_results, metrics_of, read_external
from orchestrator.report.protocol import protocol_warning
from orchestrator.report.ranking import JobResult, Report, build_report
from specs.lottery import parse_label


def grid_results(store: Store, grid_name: str, now: datetime | None = None) -> list[JobResult]:
    """Every job of the grid with its state, final metrics and the device-hours of all its attempts."""
    metrics = store.final_metrics(grid_name)
    spans: dict[str, list[tuple[datetime, datetime | None]]] = {}
    for a in store.grid_attempts(grid_name):
        spans.setdefault(a.job_hash, []).append((a.started_at, a.ended_at))
    now = now or utcnow()
    out = []
    for j in store.jobs(grid_name):
        if parse_label(j.config_name) is not None:  # lottery jobs have a section of their own
            continue
        devices, unit = devices_held(spec_resources(j.spec_json))
        hours = attempts_hours(spans[j.job_hash], devices, now) if j.job_hash in spans else None
        out.append(JobResult(subset=j.subset_name, config=j.config_name, config_key=j.config_key, seed=j.seed,
                             state=j.state, metrics=metrics.get(j.job_hash, {}), cost_hours=hours,
                             cost_unit=unit if hours is not None else "", method=j.method))
    return out


def report_settings(store: Store, grid_name: str) -> dict[str, Any]:
    """The grid's ``[report]`` table as recorded at launch (metric, reference, top_k, direction, criterion)."""
    g = store.get_grid(grid_name)
    raw = json.loads(g.spec_json) if g else {}
    rep = raw.get("report", {})
    d = Criterion()
    crit = Criterion(min_tau=float(rep.get("min_tau", d.min_tau)),
                     confidence=float(rep.get("confidence", d.confidence)),
                     max_regret=float(rep.get("max_regret", d.max_regret)))
    return {"metric": rep.get("metric", "knn_top1"), "reference": rep.get("reference", "full"),
            "top_k": int(rep.get("top_k", 3)), "higher_is_better": bool(rep.get("higher_is_better", True)),
            "criterion": crit}


def combine_grids(results: dict[str, list[JobResult]]) -> tuple[list[JobResult], list[str]]:
    """Several grids as one: subsets become ``GRID/subset``, configurations are matched by label.

    Returns the rows and one warning per grid naming its configurations that no other grid has.
    """
    labels = {g: {r.config for r in rows} for g, rows in results.items()}
    shared = set.intersection(*labels.values()) if labels else set()
    warnings = []
    for g, own in labels.items():
        alone = sorted(own - shared)
        if alone:
            warnings.append(f"not comparable across grids (only some grids have them; {g} has): {', '.join(alone)}")
    rows = [replace(r, subset=f"{g}/{r.subset}", config_key=r.config) for g, grid_rows in results.items()
            for r in grid_rows]
    return rows, warnings


CRITERION_KEYS = ("min_tau", "confidence", "max_regret")


def parse_criterion(text: str, base: Criterion) -> Criterion:
    """``"min_tau=0.7,confidence=0"`` applied over ``base``; ValueError naming the bad key."""
    from specs.base import from_table

    table: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if key.strip() not in CRITERION_KEYS:
            raise ValueError(f"--criterion: {key.strip()}: expected one of {', '.join(CRITERION_KEYS)}")
        try:
            table[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--criterion: {key.strip() or part}: expected KEY=NUMBER") from None
        if not sep:
            raise ValueError(f"--criterion: {part}: expected KEY=NUMBER")
    from orchestrator.grid import ReportConfig

    checked = from_table(ReportConfig, table, "--criterion")  # same keys and bounds as the grid file
    return replace(base, **{k: getattr(checked, k) for k in table})


@dataclass
class ReportRequest:
    """What ``dlth-orch report`` was asked for."""

    grids: Sequence[str] = ()
    external: Path | None = None
    metric: str | None = None
    reference: str | None = None
    plan: str | None = None
    criterion: str | None = None  # "min_tau=0.7,confidence=0" overrides the grid's [report] criterion
    overrides: dict[str, Any] = field(default_factory=dict)


def assemble_report(store: Store | None, req: ReportRequest) -> Report:
    """The report of ``req.grids`` (already resolved names; the store is refreshed by the caller) with the
    external table's rows added, or of the external table alone when there is no grid.

    Raises ValueError (ExternalTableError included) on bad input.
    """
    plan = parse_plan(req.plan) if req.plan else None
    grids = list(req.grids)
    table = read_external(req.external) if req.external else None
    sources = [*grids, *([str(req.external)] if req.external else [])]
    extra_warnings: list[str] = []
    if grids:
        assert store is not None
        settings = report_settings(store, grids[0])
        if len(grids) == 1:
            rows = grid_results(store, grids[0])
        else:
            rows, extra_warnings = combine_grids({g: grid_results(store, g) for g in grids})
            settings["reference"] = f"{grids[0]}/{settings['reference']}"
            metrics = {report_settings(store, g)["metric"] for g in grids}
            if len(metrics) > 1 and not req.metric:
                extra_warnings.append(f"the grids rank by different metrics ({', '.join(sorted(metrics))}); "
                                      f"this report uses {settings['metric']}")
        name = "+".join(grids)
    else:
        assert table is not None and req.external is not None
        have = metrics_of(table)
        if not req.metric and len(have) > 1:
            raise ValueError(f"--metric: expected one of the table's metrics ({', '.join(have)}) for "
                             f"{req.external}")
        settings = {"metric": req.metric or have[0], "reference": "full", "criterion": Criterion()}
        rows, name = [], req.external.stem
    if req.metric:
        settings["metric"] = req.metric
    if req.reference:
        settings["reference"] = req.reference
    if req.criterion:
        settings["criterion"] = parse_criterion(req.criterion, settings["criterion"])
    if table is not None and req.external is not None:
        keys = {r.config: r.config_key for r in rows} if rows else None
        rows = rows + external_results(table, settings["metric"], req.external, keys)
        subsets = {r.subset for r in rows}
        if settings["reference"] not in subsets and PREFIX + settings["reference"] in subsets and not grids:
            settings["reference"] = PREFIX + settings["reference"]
    extra_warnings += [w for w in (protocol_warning(rows),) if w]
    rep = build_report(name, rows, plan=plan, sources=sources, **{**settings, **req.overrides})
    return replace(rep, warnings=rep.warnings + tuple(extra_warnings)) if extra_warnings else rep
