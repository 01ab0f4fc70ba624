"""What jobs cost, measured from their attempts, and what a planned study would cost.

Pure functions. A job's cost is the wall time of every attempt it had (completed, failed, preempted,
timed out, ...: the cluster was held for all of them) times the devices it held: GPUs (nodes x GPUs
per node) when it asked for any, else CPU cores (nodes x processes x CPUs per process). The unit says
which: ``GPU-hours`` or ``CPU-hours``. An attempt still running counts up to ``now``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GPU_HOURS, CPU_HOURS = "GPU-hours", "CPU-hours"
_PLAN = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Plan:
    """A planned study of ``configs`` x ``seeds`` jobs: hours on the reference vs on the chosen subset."""

    configs: int
    seeds: int
    subset: str | None  # the recommended subset (or, without one, the closest)
    recommended: bool  # False: ``subset`` is only the closest, the criterion is not met
    unit: str
    reference_hours: float | None
    subset_hours: float | None
    factor: float | None  # reference_hours / subset_hours
    note: str | None  # why a number is missing


def parse_plan(text: str) -> tuple[int, int]:
    """``"100x3"`` -> (100 configurations, 3 seeds); ValueError otherwise."""
    m = _PLAN.match(text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"--plan: expected CONFIGSxSEEDS with positive integers (e.g. 100x3), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def devices_held(resources: Mapping[str, Any]) -> tuple[float, str]:
    """(how many devices, unit) one job holds, from its spec's ``resources`` table (defaults as in specs/job.py)."""
    nodes = int(resources.get("nodes", 1))
    gpus = int(resources.get("gpus_per_node", 0))
    if gpus > 0:
        return float(nodes * gpus), GPU_HOURS
    return float(nodes * int(resources.get("nproc_per_node", 1)) * int(resources.get("cpus_per_task", 1))), CPU_HOURS


def attempts_hours(spans: Iterable[tuple[datetime, datetime | None]], devices: float, now: datetime) -> float:
    """Device-hours of a job's attempts, each (started_at, ended_at or None while running)."""
    seconds = sum(max(0.0, ((end or now) - start).total_seconds()) for start, end in spans)
    return seconds / 3600.0 * devices


def plan_study(configs: int, seeds: int, subset: str | None, recommended: bool, ref_per_job: float | None,
               ref_unit: str, sub_per_job: float | None, sub_unit: str) -> Plan:
    """Scale the measured cost per job to ``configs`` x ``seeds`` jobs on the reference and on ``subset``."""
    jobs = configs * seeds
    ref_h = None if ref_per_job is None else ref_per_job * jobs
    sub_h = None if sub_per_job is None or subset is None else sub_per_job * jobs
    note = None
    if subset is None:
        note = "no subset to plan on"
    elif ref_h is None or sub_h is None:
        note = "no measured cost (no attempts recorded) for " + (subset if sub_h is None else "the reference")
    elif ref_unit != sub_unit:
        note = f"not comparable: the reference is measured in {ref_unit}, {subset} in {sub_unit}"
    factor = ref_h / sub_h if note is None and ref_h is not None and sub_h else None
    return Plan(configs, seeds, subset, recommended, ref_unit or sub_unit, ref_h, sub_h, factor, note)


def per_job(hours: Sequence[float]) -> float | None:
    """Mean cost of the jobs that ran at all (a failed job's hours count: they are part of the price)."""
    return sum(hours) / len(hours) if hours else None


def spec_resources(spec_json: str) -> dict[str, Any]:
    """The ``resources`` table of a job's recorded spec (``{}`` when it has none or the JSON is bad)."""
    try:
        res = json.loads(spec_json).get("resources") or {}
    except (ValueError, AttributeError):
        return {}
    return res if isinstance(res, dict) else {}
