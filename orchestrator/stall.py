"""Stalled jobs: the heartbeat is alive but the step counter has not moved for ``[resources] stall_s``.

The worker's heartbeat writes ``progress.json`` (:mod:`workers.reporting`); a job is *stalled* while it is
training (not evaluating), its last beat is recent and its step has not moved for ``stall_s`` seconds
(default: 20 times its own mean step time, at least :data:`MIN_STALL_S`). The backends stop such a job and
record the attempt FAILED with the reason "stalled" (a counted failure: it is retried within the budget).
The file names the attempt that wrote it: a retry is judged on its own beats, never on the stalled attempt's
file that it has not replaced yet.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from specs.contract import PROGRESS_FILE
from specs.job import JobSpec

log = logging.getLogger(__name__)
MIN_STALL_S = 600.0
STEP_TIMES = 20.0


def stall_limit(spec: JobSpec, step_s: float) -> float:
    """Seconds without a step that make ``spec``'s job stalled."""
    return spec.resources.stall_s or max(MIN_STALL_S, STEP_TIMES * step_s)


@dataclass(frozen=True)
class Stall:
    """A stalled attempt: the one whose heartbeat wrote the progress file, and the reason line."""

    attempt: int | None  # None: written by a worker older than the field (a frozen study's snapshot)
    reason: str

    def of(self, open_attempts: Collection[int]) -> bool:
        """Whether the stalled attempt is one of ``open_attempts``. An earlier attempt's progress file stays
        until the new attempt's first beat replaces it, and says nothing about the new attempt. A file that
        names no attempt (an older worker's) is judged as it always was."""
        return self.attempt is None or self.attempt in open_attempts


def stalled(job_dir: str | Path, spec_json: str, now: float | None = None) -> Stall | None:
    """The stall of the job in ``job_dir``, if it is stalled, else None (no progress file: not judged). The
    caller judges only a stall of an attempt it holds open (:meth:`Stall.of`)."""
    try:
        p = json.loads((Path(job_dir) / PROGRESS_FILE).read_text())
        step, moved_at, beat_at = int(p["step"]), float(p["moved_at"]), float(p["beat_at"])
        step_s, phase, attempt = float(p.get("step_s", 0.0)), str(p.get("phase", "")), p.get("attempt")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if phase != "train":
        return None
    now = time.time() if now is None else now
    limit = stall_limit(JobSpec.from_json(spec_json), step_s)
    if now - moved_at <= limit or now - beat_at > limit:  # moving, or the heartbeat itself stopped
        return None
    return Stall(attempt if isinstance(attempt, int) else None,
                 f"stalled: step {step} has not moved for {now - moved_at:.0f}s (stall_s {limit:g}) "
                 "while its heartbeat went on")
