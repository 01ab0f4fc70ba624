"""Producing a grid's report files: the one path behind ``dlth-orch report``, the report that ``launch --wait``
writes when the grid's last job ends, the SLURM report job, the detached local launcher and the refreshes
of ``[report] every = N`` while a grid runs.

Whoever calls it, a report is the same files (``report.md`` + plots, ``report.html``, ``report.json``) in the
same folder (``<workspace>/reports/<grid>`` unless told otherwise), each saying how many of the grid's jobs
it covers. Where the last report went, and when, is recorded in the database (``dlth_meta``), so ``status``
can say where it is from any machine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db import JobState, Store
from orchestrator.workspace import report_dir

if TYPE_CHECKING:  # the report's modules (scipy, matplotlib: seconds) are imported when a report is made
    from orchestrator.report.lottery import LotteryReport
    from orchestrator.report.ranking import Report
    from orchestrator.report.stamp import Stamp
    from orchestrator.results import ReportRequest

log = logging.getLogger(__name__)
_LAST_KEY = "report/last/{}"  # dlth_meta: where and when the grid's last report was written
UNFINISHED = JobState.UNFINISHED  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Produced:
    """A report as computed and written: the ranking, the lottery section (if any) and the files."""

    report: Report
    lottery: LotteryReport | None
    files: list[Path]

    out: Path | None = None  # where the files went (None: printed only, nothing written)

    @property
    def out_dir(self) -> Path:
        assert self.out is not None, "the report was not written"
        return self.out

    def headline(self) -> list[str]:
        """The decision in a few lines (the report's first lines), or the lottery summary for a lottery grid."""
        from orchestrator.report.render import has_rank_section
        from orchestrator.report.sections import recommendation

        if has_rank_section(self.report):
            return list(recommendation(self.report).lines)
        n = len(self.lottery.settings) if self.lottery else 0
        return [f"Lottery tickets: {n} setting{'s' if n != 1 else ''} (see the report)"]


def grid_finished(store: Store, grid_name: str) -> bool:
    """No job of the grid is pending, waiting, queued or running (failed and cancelled ones count as ended)."""
    return store.grid_finished(grid_name)


def produce(store: Store | None, req: ReportRequest, out_dir: Path | None = None, *, write: bool = True) -> Produced:
    """Assemble the report ``req`` asks for (the store already refreshed) and, when ``write``, write its files
    (to ``out_dir``, default the workspace's ``reports/<grid>``), stamped with the version, time and grid hash.

    Raises ValueError on bad input (as :func:`orchestrator.results.assemble_report`)."""
    from orchestrator.report import write_report_files
    from orchestrator.report.adaptive_section import with_adaptive
    from orchestrator.report.code_section import with_code_versions
    from orchestrator.report.efficiency_section import with_efficiency
    from orchestrator.report.lottery import lottery_report_for
    from orchestrator.report.ticket_section import with_ticket
    from orchestrator.results import assemble_report

    rep = assemble_report(store, req)
    if store is not None:  # the report names the code behind its numbers (and warns when they mix)
        rep = with_code_versions(rep, store, list(req.grids))
        rep = with_efficiency(rep, store, list(req.grids))
        rep = with_adaptive(rep, store, list(req.grids))  # an adaptive study's looks
        rep = with_ticket(rep, store, list(req.grids))  # a reused ticket: its source, audit and saving
    lottery = None  # the lottery section: one grid's [lottery.*] chains
    if store is not None and len(req.grids) == 1:
        lottery = lottery_report_for(store, req.grids[0], rep.metric, rep.higher_is_better)
    if not write:
        return Produced(rep, lottery, [])
    target = out_dir or report_dir(rep.grid)
    files = write_report_files(rep, target, lottery, _stamp(store, req.grids))
    produced = Produced(rep, lottery, files, target)
    if store is not None and len(req.grids) == 1:
        record_written(store, req.grids[0], produced)
    return produced


def _stamp(store: Store | None, grids: Sequence[str]) -> Stamp:
    """The stamp of files written now: this dlth-orch's version, the time, each grid's spec hash."""
    from orchestrator.report.stamp import Stamp

    hashes = {}
    for name in grids:
        g = store.get_grid(name) if store is not None else None
        if g is not None:
            hashes[name] = g.spec_hash
    return Stamp(hashes)


def produce_for_grid(store: Store, grid_name: str, out_dir: Path | None = None) -> Produced:
    """The grid's report with its own ``[report]`` settings, written to ``out_dir`` (default: the workspace's
    ``reports/<grid>``)."""
    from orchestrator.results import ReportRequest

    return produce(store, ReportRequest(grids=[grid_name]), out_dir)


def record_written(store: Store, grid_name: str, produced: Produced) -> None:
    """Remember where the grid's report was written, when, and what it covered (read by ``status``)."""
    rep = produced.report
    store.set_meta(_LAST_KEY.format(grid_name), json.dumps({
        "dir": str(produced.out_dir), "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "jobs_completed": rep.jobs_completed, "jobs_total": rep.jobs_total, "complete": rep.complete,
    }))


def last_written(store: Store, grid_name: str) -> dict[str, Any] | None:
    """Where and when the grid's last report was written (``None``: never)."""
    raw = store.get_meta(_LAST_KEY.format(grid_name))
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def print_produced(produced: Produced, console: Any, *, full: bool = True) -> None:
    """Print the report (``full``) or only its decision, then where the files are."""
    from rich.markup import escape

    from orchestrator.report import print_report
    from orchestrator.report.lottery import print_lottery
    from orchestrator.report.render import has_rank_section

    if full:
        if produced.lottery is None or has_rank_section(produced.report):
            print_report(produced.report, console)
        if produced.lottery is not None:
            print_lottery(produced.lottery, console)
    else:
        lines = produced.headline()
        console.print(f"[bold]{escape(lines[0])}[/]")
        for line in lines[1:]:
            console.print(f"  {escape(line)}")
    if produced.files:
        console.print(f"written: {written_line(produced.files)}", soft_wrap=True)
    else:
        console.print("files: none written (--out DIR writes report.md, report.html, report.json and the plots)",
                      soft_wrap=True)


def written_line(files: Sequence[Path]) -> str:
    """``DIR/report.html (+ report.md, report.json, 3 plots)``: the page to open first, then the rest."""
    html = next((f for f in files if f.suffix == ".html"), files[0])
    pages = [f.name for f in files if f.suffix in (".md", ".json")]
    plots = sum(1 for f in files if f.suffix == ".png")
    rest = pages + ([f"{plots} plot{'s' if plots != 1 else ''}"] if plots else [])
    return f"{html}" + (f" (+ {', '.join(rest)})" if rest else "")


class Refresher:
    """``[report] every = N``: rewrite the report files each time N more jobs have completed (0: never)."""

    def __init__(self, store: Store, grid_name: str, every: int) -> None:
        self.store, self.grid, self.every = store, grid_name, max(0, int(every))
        self.done_at_last = store.state_counts(grid_name).get(JobState.COMPLETED, 0) if self.every else 0

    def poll(self, completed: int | None = None) -> Path | None:
        """Refresh if due (``completed``: the grid's completed jobs, if the caller has counted them);
        returns the report folder when it wrote. A failing report is logged, never raised: the grid goes on."""
        if not self.every:
            return None
        if completed is None:
            completed = self.store.state_counts(self.grid).get(JobState.COMPLETED, 0)
        if completed - self.done_at_last < self.every:
            return None
        self.done_at_last = completed
        try:
            produced = produce_for_grid(self.store, self.grid)
        except Exception as exc:  # noqa: BLE001 - a report must never stop the grid it reports on
            log.warning("report of %s not refreshed: %s", self.grid, str(exc).splitlines()[0] if str(exc) else exc)
            return None
        log.info("report of %s refreshed (%d jobs completed): %s", self.grid, completed, produced.out_dir)
        return produced.out_dir


def report_every(store: Store, grid_name: str) -> int:
    """The grid's ``[report] every`` as recorded at launch (0: no refresh while it runs)."""
    g = store.get_grid(grid_name)
    try:
        raw = json.loads(g.spec_json) if g else {}
        return int((raw.get("report") or {}).get("every", 0))
    except (ValueError, TypeError, AttributeError):
        return 0


def configured_out(store: Store, grid_name: str) -> Path | None:
    """The grid's ``[report] out`` as recorded at launch, relative to its grid file (``None``: not set)."""
    g = store.get_grid(grid_name)
    try:
        out = str((json.loads(g.spec_json).get("report") or {}).get("out", "")) if g else ""
    except (ValueError, AttributeError):
        return None
    if not out or g is None:
        return None
    return Path(g.source_path).parent / out if g.source_path else Path(out)


def finish_report(store: Store, grid_name: str) -> Produced | None:
    """Write the report of a grid whose jobs have all ended; ``None`` (and a log line) when it has not ended
    or the report failed. Never raises: the report must not fail the grid."""
    if not grid_finished(store, grid_name):
        return None
    from orchestrator.notify import tick

    tick(store, grid_name)  # "grid finished" (or paused) to [notify], once; never raises
    try:
        return produce_for_grid(store, grid_name)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("the report of %s could not be written: %s", grid_name,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None


def run_report_job(store: Store, grid_name: str, out_dir: Path) -> Produced | None:
    """The SLURM report job's work: bring the grid up to date, write its report to ``out_dir`` and record the
    outcome (``status`` shows it). Returns ``None`` when the report failed (the outcome says why)."""
    from orchestrator.backends.slurm_report import record_outcome
    from orchestrator.notify import tick
    from orchestrator.status import refresh

    try:
        refresh(store, grid_name)
        tick(store, grid_name)  # "grid finished" to [notify], once; never raises
        produced = produce_for_grid(store, grid_name, out_dir)
    except Exception as exc:  # noqa: BLE001 - recorded for `status`, then the job exits non-zero
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        record_outcome(store, grid_name, f"failed: {line}")
        log.error("the report of %s failed: %s", grid_name, line)
        return None
    record_outcome(store, grid_name, "written")
    return produced


def report_status(store: Store, grid_name: str) -> dict[str, Any]:
    """Where the grid's report is, or why it is missing: ``{"state", "line", ...}`` for ``status``."""
    from orchestrator.backends.slurm_report import load_report_job

    last = last_written(store, grid_name)
    job = load_report_job(store, grid_name)
    newer_job = job is not None and (last is None or job.submitted_at > str(last.get("at", "")))
    if job is not None and newer_job and job.outcome.startswith("failed"):
        return {"state": "failed", "slurm_id": job.slurm_id, "log": job.log_path,
                "line": f"report: the report job {job.slurm_id} {job.outcome} (log {job.log_path}); "
                        f"`dlth-orch report {grid_name} --out DIR` writes it by hand"}
    if job is not None and newer_job and job.outcome.startswith("cancelled"):
        return {"state": "cancelled", "slurm_id": job.slurm_id,
                "line": f"report: the report job {job.slurm_id} was {job.outcome}; "
                        f"`dlth-orch report {grid_name} --out DIR` writes the report"}
    if job is not None and newer_job and not job.outcome:
        return {"state": "scheduled", "slurm_id": job.slurm_id, "dir": job.out_dir,
                "line": f"report: SLURM job {job.slurm_id} writes it to {job.out_dir} when the grid's last task "
                        f"has ended"}
    if last is not None:
        cover = f"{last.get('jobs_completed')}/{last.get('jobs_total')} jobs completed"
        return {"state": "written", **last,
                "line": f"report: {Path(str(last['dir'])) / 'report.html'} (written "
                        f"{str(last.get('at', '')).replace('T', ' ').replace('+00:00', '')} UTC, {cover})"}
    return {"state": "none", "line": f"report: none yet (`dlth-orch report {grid_name} --out DIR` writes it)"}
