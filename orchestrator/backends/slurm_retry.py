"""Retries that read the failure: what a SLURM job's next submission asks for after its last run failed.

- Out of memory: twice the memory of the run that died, capped by the profile's ``max_mem_gb`` and the
  partition's ``MaxMemPerNode`` (``scontrol show partition``).
- A time limit hit that could not checkpoint (SLURM ended the run TIMEOUT and the worker never recorded
  its stop): twice the time, within the partition's ``MaxTime``.
- A node on which the job failed twice (attempts recorded by the worker or closed by a refresh, by the node
  each ran on) is excluded from its later submissions (``--exclude``), unless no other node would be left.
- Preemptions (and time limits that checkpointed and requeued) change nothing and cost no budget.

The adjustments are recorded in the job's directory (``retry_resources.json``), not in its spec, so the job
keeps its identity hash, and every later submission (another launch, another orchestrator) applies them
(:func:`adjusted_spec`). Each change is said in one line, logged and appended to the attempt's reason.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from db import JobRow, Store
from orchestrator.backends.slurm_cmd import SlurmError, run_slurm
from orchestrator.backends.slurm_sacct import parse_duration
from specs.atomic import write_json_atomic
from specs.job import JobSpec
from specs.lifecycle import AttemptState

log = logging.getLogger(__name__)
ADJUST_FILE = "retry_resources.json"
EXCLUDE_AFTER = 2  # failures on one node before the job's retries avoid it
MEM_FACTOR = 2.0
TIME_FACTOR = 2.0


@dataclass(frozen=True)
class Adjustments:
    """What a job's retries ask for beyond its spec (``None``: the spec's own value)."""

    mem_gb: float | None = None
    time_min: int | None = None
    exclude: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load(job_dir: str | Path) -> Adjustments:
    """The job's recorded adjustments (none if it never failed in a way that asks for more)."""
    try:
        raw = json.loads((Path(job_dir) / ADJUST_FILE).read_text())
    except (OSError, ValueError):
        return Adjustments()
    return Adjustments(mem_gb=raw.get("mem_gb"), time_min=raw.get("time_min"),
                       exclude=[str(n) for n in raw.get("exclude", [])], notes=[str(n) for n in raw.get("notes", [])])


def save(job_dir: str | Path, adj: Adjustments) -> None:
    """Record ``adj`` atomically in the job's directory."""
    write_json_atomic(Path(job_dir) / ADJUST_FILE, asdict(adj))


def adjusted_spec(spec: JobSpec, job_dir: str | Path, profile_exclude: str = "") -> JobSpec:
    """``spec`` with the job's recorded adjustments as ``resources.slurm`` overrides (identity unchanged:
    resources are not part of it)."""
    adj = load(job_dir)
    before = str(spec.resources.slurm.get("exclude", profile_exclude) or "").split(",")
    adj = replace(adj, exclude=[n for n in adj.exclude if n not in before])
    if adj.mem_gb is None and adj.time_min is None and not adj.exclude:
        return spec
    slurm = dict(spec.resources.slurm)
    if adj.mem_gb is not None:
        slurm["mem_gb"] = adj.mem_gb
    if adj.time_min is not None:
        slurm["time_min"] = adj.time_min
    if adj.exclude:
        before = str(slurm.get("exclude", profile_exclude) or "")
        slurm["exclude"] = ",".join([p for p in before.split(",") if p] + adj.exclude)
    return replace(spec, resources=replace(spec.resources, slurm=slurm))


@dataclass(frozen=True)
class PartitionLimits:
    """A partition's per-node memory and time limits (``None``: unlimited or unknown), and its node count
    (0: unknown)."""

    max_mem_mb: int | None = None
    max_time_min: int | None = None
    total_nodes: int = 0


def parse_partitions(text: str) -> dict[str, PartitionLimits]:
    """``scontrol show partition -o`` -> limits by partition name; the default one also under ``""``."""
    out: dict[str, PartitionLimits] = {}
    for line in text.splitlines():
        kv = dict(re.findall(r"(\w+)=(\S*)", line))
        if "PartitionName" not in kv:
            continue
        mem = kv.get("MaxMemPerNode", "UNLIMITED")
        secs = parse_duration(kv.get("MaxTime", "UNLIMITED").replace("INFINITE", "UNLIMITED"))
        nodes = kv.get("TotalNodes", "0")
        limits = PartitionLimits(int(mem) if mem.isdigit() else None, None if secs is None else secs // 60,
                                 int(nodes) if nodes.isdigit() else 0)
        out[kv["PartitionName"]] = limits
        if kv.get("Default") == "YES":
            out[""] = limits
    return out


def partition_limits(partition: str) -> PartitionLimits:
    """Limits of ``partition`` ("" = the default partition) on the targeted cluster; none if unreadable."""
    try:
        return _partitions(os.environ.get("SLURM_CONF", "")).get(partition, PartitionLimits())
    except SlurmError as exc:
        log.warning("cannot read the partition limits (%s): retries are capped by the profile only", exc)
        return PartitionLimits()


@functools.lru_cache(maxsize=4)
def _partitions(_slurm_conf: str) -> dict[str, PartitionLimits]:
    return parse_partitions(run_slurm(["scontrol", "show", "partition", "-o"]).stdout)


def _mem_gb(manifest: dict[str, Any]) -> float | None:
    mem = str(manifest.get("mem", ""))
    return int(mem[:-1]) / 1024 if mem.endswith("M") and mem[:-1].isdigit() else None


def _cap_note(cap_gb: float | None, source: str, limit_gb: float | None, limit_source: str) -> tuple[float | None, str]:
    if limit_gb is not None and (cap_gb is None or limit_gb < cap_gb):
        return limit_gb, limit_source
    return cap_gb, source


def exclude_failed_nodes(store: Store, job: JobRow, partition: str) -> list[str]:
    """The nodes ``job`` failed on :data:`EXCLUDE_AFTER` times or more (never every node of ``partition``),
    recorded with the job's adjustments; each newly excluded node is said in one line."""
    if job.failure_count < EXCLUDE_AFTER:
        return load(job.job_dir).exclude
    nodes = {c.attempt_id: c.node for c in store.attempt_codes([job.job_hash]).get(job.job_hash, [])}
    failures: dict[str, int] = {}
    for a in store.attempts(job.job_hash):
        node = nodes.get(a.id) or a.host or ""
        if a.state in AttemptState.FAILURES and node and not re.search(r"[\[,]", node):
            failures[node] = failures.get(node, 0) + 1
    bad = sorted(n for n, k in failures.items() if k >= EXCLUDE_AFTER)
    total = partition_limits(partition).total_nodes
    adj = load(job.job_dir)
    if total and len(bad) >= total:  # never exclude the partition's last node
        keep = sorted(bad, key=lambda n: (failures[n], n))[0]
        bad.remove(keep)
        log.warning("job %s: failed %d times on %s: not excluded (no other node is left)", job.job_hash,
                    failures[keep], keep)
    new = [n for n in bad if n not in adj.exclude]
    if new:
        line = f"failed {EXCLUDE_AFTER} times on {', '.join(new)}: the retries exclude " + (
            "it" if len(new) == 1 else "them")
        log.warning("job %s: %s", job.job_hash, line)
        save(job.job_dir, replace(adj, exclude=sorted({*adj.exclude, *bad}), notes=[*adj.notes, line]))
    return sorted({*adj.exclude, *bad})


def on_failure(job_hash: str, job_dir: str | Path, state: str, manifest: dict[str, Any] | None,
               *, checkpointed: bool) -> str | None:
    """Record what the job's next submission asks for after its run ended in ``state``; the one line saying
    so (None when nothing changes). ``manifest``: the run's submission manifest (what it asked for);
    ``checkpointed``: the worker recorded its stop (so a TIMEOUT resumes where it was)."""
    if state != AttemptState.OUT_OF_MEMORY and (state != AttemptState.TIMEOUT or checkpointed):
        return None  # nothing to read in a failure that more memory or time would not cure
    adj = load(job_dir)
    notes: list[str] = []
    mem_gb, time_min = adj.mem_gb, adj.time_min
    m = manifest or {}
    limits = partition_limits(str(m.get("partition", "")))
    if state == AttemptState.OUT_OF_MEMORY and (asked := _mem_gb(m)) is not None:
        cap, why = _cap_note(float(m["max_mem_gb"]) if m.get("max_mem_gb") else None, "the profile's max_mem_gb",
                             None if limits.max_mem_mb is None else limits.max_mem_mb / 1024,
                             "the partition's MaxMemPerNode")
        want = asked * MEM_FACTOR
        new = min(want, cap) if cap is not None else want
        new = math.floor(new * 1024) / 1024
        if new > asked:
            mem_gb = new
            notes.append(f"out of memory at {asked:.3g} GB: the retry asks for {new:.3g} GB"
                         + (f" (capped by {why})" if new < want else ""))
        else:
            notes.append(f"out of memory at {asked:.3g} GB: already at {why} ({cap:.3g} GB), the retry asks the same")
    if state == AttemptState.TIMEOUT and not checkpointed and m.get("time_min"):
        asked_min = int(m["time_min"])
        want_min = int(math.ceil(asked_min * TIME_FACTOR))
        cap_min = limits.max_time_min
        new_min = min(want_min, cap_min) if cap_min is not None else want_min
        if new_min > asked_min:
            time_min = new_min
            notes.append(f"time limit of {asked_min} min hit without a checkpoint: the retry asks for {new_min} min"
                         + (" (capped by the partition's MaxTime)" if new_min < want_min else ""))
        else:
            notes.append(f"time limit of {asked_min} min hit without a checkpoint: already at the partition's "
                         "MaxTime, the retry asks the same")
    new_adj = Adjustments(mem_gb, time_min, adj.exclude, [*adj.notes, *notes])
    if new_adj != adj:
        save(job_dir, new_adj)
    if not notes:
        return None
    line = "; ".join(notes)
    log.warning("job %s: %s", job_hash, line)
    return line
