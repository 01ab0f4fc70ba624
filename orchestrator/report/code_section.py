"""The report names its code: which code versions produced its numbers, and a warning when a comparison
mixes them, with the command that retrains the stale jobs.

A completed job's version is the snapshot its completing attempt ran (``attempts.code_hash``); "live" is
code run before snapshots existed. The grid's newest version is the snapshot of its latest launch; the
jobs on another version are stale (:mod:`orchestrator.provenance.stale`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from db import Store
from orchestrator.provenance.stale import LIVE, code_launches, job_codes, newest_code
from orchestrator.report.ranking import Report
from orchestrator.report.sections import EXTRA_SECTIONS, Section
from specs.job import job_label

NAMED_STALE = 5


def grid_code_versions(store: Store, grid: str) -> list[dict[str, Any]]:
    """One dict per code version behind the grid's results: hash, commit, dirty flag, launch time, the number
    of jobs, whether it is the grid's newest, and the labels of its jobs when it is not (stale)."""
    codes = job_codes(store, grid)
    newest = newest_code(store, grid)
    described = code_launches(store, set(codes.values()) - {LIVE})
    labels = {j.job_hash: job_label(j.subset_name, j.config_name, j.seed) for j in store.jobs(grid)}
    out = []
    def launched(code: str) -> str:
        return described[code].created_at.isoformat() if code in described else ""

    for code in sorted(set(codes.values()), key=launched):
        launch = described.get(code)
        jobs = sorted(labels[h] for h, c in codes.items() if c == code)
        out.append({"grid": grid, "code_hash": code, "commit": launch.git_commit if launch else None,
                    "dirty": launch.git_dirty if launch else None,
                    "launched": launch.created_at.isoformat(sep=" ", timespec="seconds") if launch else None,
                    "jobs": len(jobs), "newest": code == newest, "stale_jobs": [] if code == newest else jobs})
    return out


def _describe(v: dict[str, Any]) -> str:
    commit = (v["commit"] or "no commit")[:12] + (" + diff" if v["dirty"] else "")
    return f"{v['jobs']} jobs ran {v['code_hash']} ({commit})" if v["code_hash"] != LIVE else \
        f"{v['jobs']} jobs ran the live code (no snapshot)"


def mixed_warning(store: Store, grid: str, versions: list[dict[str, Any]]) -> str | None:
    """One line when the grid's results come from more than one code version, with the retraining command."""
    if len(versions) < 2:
        return None
    stale = [label for v in versions for label in v["stale_jobs"]]
    g = store.get_grid(grid)
    source = g.source_path if g and g.source_path else "GRID_FILE"
    named = ", ".join(stale[:NAMED_STALE]) + (f" and {len(stale) - NAMED_STALE} more" if len(stale) > NAMED_STALE
                                              else "")
    return (f"{grid}: the results mix {len(versions)} code versions ({'; '.join(map(_describe, versions))}); "
            f"stale: {named}; retrain them on the current code: dlth-orch retry {grid} --stale && "
            f"dlth-orch launch {source} --code current")


def with_code_versions(report: Report, store: Store, grids: list[str]) -> Report:
    """``report`` with the code versions of ``grids`` and a warning for each grid that mixes versions."""
    versions: list[dict[str, Any]] = []
    warnings: list[str] = []
    for grid in grids:
        found = grid_code_versions(store, grid)
        versions += found
        if (w := mixed_warning(store, grid, found)) is not None:
            warnings.append(w)
    return replace(report, code_versions=tuple(versions), warnings=report.warnings + tuple(warnings))


def code_section(report: Report) -> Section | None:
    """The "Code versions" block: one row per version behind the report's numbers."""
    if not report.code_versions:
        return None
    rows = tuple((v["grid"], v["code_hash"], (v["commit"] or "—")[:12], "yes" if v["dirty"] else "no",
                  v["launched"] or "—", str(v["jobs"]), "newest" if v["newest"] else "stale")
                 for v in report.code_versions)
    many = len({v["code_hash"] for v in report.code_versions}) > 1
    line = ("the numbers come from more than one code version (see the warning)" if many
            else "every number comes from one code version")
    return Section("Code versions", (line,), ("grid", "code", "commit", "dirty", "launched", "jobs", ""), rows)


EXTRA_SECTIONS.append(code_section)
