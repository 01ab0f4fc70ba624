"""Stalled jobs: the heartbeat is alive but the step counter has not moved for ``[resources] stall_s``.

The worker's heartbeat writes ``progress.json`` (:mod:`workers.reporting`); a job is *stalled* while it is
training (not evaluating), its last beat is recent and its step has not moved for ``stall_s`` seconds
(default: 20 times its own mean step time, at least :data:`MIN_STALL_S`). The backends stop such a job and
record the attempt FAILED with the reason "stalled" (a counted failure: it is retried within the budget).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from specs.contract import PROGRESS_FILE
from specs.job import JobSpec

log = logging.getLogger(__name__)
MIN_STALL_S = 600.0
STEP_TIMES = 20.0


def stall_limit(spec: JobSpec, step_s: float) -> float:
    """Seconds without a step that make ``spec``'s job stalled."""
    return spec.resources.stall_s or max(MIN_STALL_S, STEP_TIMES * step_s)


def stalled(job_dir: str | Path, spec_json: str, now: float | None = None) -> str | None:
    """The reason line if the job in ``job_dir`` is stalled, else None (no progress file: not judged)."""
    try:
        p = json.loads((Path(job_dir) / PROGRESS_FILE).read_text())
        step, moved_at, beat_at = int(p["step"]), float(p["moved_at"]), float(p["beat_at"])
        step_s, phase = float(p.get("step_s", 0.0)), str(p.get("phase", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if phase != "train":
        return None
    now = time.time() if now is None else now
    limit = stall_limit(JobSpec.from_json(spec_json), step_s)
    if now - moved_at <= limit or now - beat_at > limit:  # moving, or the heartbeat itself stopped
        return None
    return (f"stalled: step {step} has not moved for {now - moved_at:.0f}s (stall_s {limit:g}) "
            "while its heartbeat went on")
