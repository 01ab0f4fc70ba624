"""Starting a worker from its job's code snapshot (the backends' side of :mod:`specs.code_version`)."""

from __future__ import annotations

import logging

from db import Store, workspace_dir
from orchestrator.provenance.snapshot import code_root
from specs.code_version import code_env

log = logging.getLogger(__name__)


def job_code_env(store: Store, job_hash: str, base: dict[str, str]) -> dict[str, str]:
    """The environment entries that start ``job_hash``'s worker from its snapshot (``{}``: a job recorded
    before snapshots existed runs the live code, as it always did)."""
    code = store.code_of([job_hash]).get(job_hash)
    if code is None:
        log.warning("job %s has no code snapshot (recorded by an older dlth-orch): it runs the live code", job_hash)
        return {}
    return code_env(code_root(workspace_dir()), code, base)
