"""The report's check that it compares like with like: results trained under different versions of the
training protocol (``specs/protocol.py``) must not be ranked against each other silently.

Results of a grid's own jobs carry the version as a final metric; results without it are version 1;
external tables carry none and are not checked. The warning lands in ``Report.warnings``, so the
terminal, Markdown and HTML forms all show it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from db import JobState
from orchestrator.report.ranking import JobResult
from specs.protocol import TRAINING_PROTOCOL, protocol_of


def protocol_versions(rows: Sequence[JobResult]) -> Counter[int]:
    """How many completed jobs (of the grids, not external tables) each protocol version has."""
    return Counter(protocol_of(r.metrics) for r in rows if r.state == JobState.COMPLETED and not r.external)


def protocol_warning(rows: Sequence[JobResult]) -> str | None:
    """One line when ``rows`` mix training-protocol versions; None when they share one."""
    versions = protocol_versions(rows)
    if len(versions) < 2:
        return None
    counts = ", ".join(f"v{v}: {n} job(s)" for v, n in sorted(versions.items()))
    old = sorted(v for v in versions if v != max(versions))
    return (f"results mix training-protocol versions ({counts}; this code trains v{TRAINING_PROTOCOL}): a "
            f"comparison across versions is not like with like; retrain the v{', v'.join(map(str, old))} jobs "
            "(or report them in a grid of their own)")
