"""The report's "Efficiency" section: the jobs that used less than 30% of their devices (the GPU where
they had one, else their allocated CPU cores), from each job's latest measured attempt."""

from __future__ import annotations

from dataclasses import replace

from db import Store
from orchestrator.efficiency import LOW_UTILISATION, job_usage, low_utilisation
from orchestrator.report.ranking import Report
from orchestrator.report.sections import EXTRA_SECTIONS, Section

NAMED = 20


def with_efficiency(report: Report, store: Store, grids: list[str]) -> Report:
    """``report`` with the usage of the jobs of ``grids``."""
    return replace(report, efficiency=tuple(r for g in grids for r in job_usage(store, g)))


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _mib(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def efficiency_section(report: Report) -> Section | None:
    """Which jobs used their devices poorly (None when nothing was measured)."""
    rows = list(report.efficiency)
    if not rows:
        return None
    low = low_utilisation(rows)
    gpus = sum(r["device"] == "gpu" for r in rows)
    kind = f"{gpus} on GPUs, {len(rows) - gpus} on CPUs" if gpus else "all on CPUs (utilisation per allocated core)"
    line = (f"{len(low)} of {len(rows)} measured jobs used less than {LOW_UTILISATION:.0%} of their devices "
            f"({kind})" if low else
            f"every one of the {len(rows)} measured jobs used at least {LOW_UTILISATION:.0%} of its devices ({kind})")
    lines = [line]
    if len(low) > NAMED:
        lines.append(f"the {NAMED} least used are listed")
    table = tuple((r["label"], r["job"][:12], r["device"], _pct(r["device_util"]), _pct(r["cpu_util"]),
                   _mib(r["max_rss_mb"]), _mib(r["gpu_mem_peak_mb"])) for r in low[:NAMED])
    header = ("job", "hash", "device", "utilisation", "CPU/core", "peak RSS MiB", "peak GPU MiB") if low else ()
    return Section("Efficiency", tuple(lines), header, table)


EXTRA_SECTIONS.append(efficiency_section)
