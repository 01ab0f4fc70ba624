"""Test-only fault injection, off unless the environment asks for it (the real SLURM tests need a parent
job that fails its first attempt deterministically, so that its child's dependency can never be met).

``DLTH_TEST_FREEZE_ONCE=<directory>``: a job whose hash has an armed marker ``<directory>/<hash>.freeze``
stops stepping once (the marker is renamed ``<hash>.frozen``) while its heartbeat goes on: a stall.

``DLTH_TEST_FAIL_UNLESS_EXCLUDED=<directory>``: a SLURM attempt of a job armed with ``<hash>.exclude`` fails
unless its SLURM job excludes a node (``ExcNodeList`` in ``scontrol show job``): the node exclusion's test.

``DLTH_TEST_FAIL_ONCE=<directory>``: a job whose hash has an armed marker ``<directory>/<hash>.fail``
fails once (the marker is renamed ``<hash>.failed``); every other attempt runs normally. Single-rank jobs
only (another rank would not fail with it).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

ENV = "DLTH_TEST_FAIL_ONCE"
FREEZE_ENV = "DLTH_TEST_FREEZE_ONCE"
EXCLUDE_ENV = "DLTH_TEST_FAIL_UNLESS_EXCLUDED"


class InjectedFailure(RuntimeError):
    """Raised by :func:`maybe_fail_once`."""


def maybe_fail_once(job_hash: str) -> None:
    """Fail this attempt of ``job_hash`` if :data:`ENV` names a directory where it is armed."""
    where = os.environ.get(ENV)
    if not where:
        return
    armed = Path(where) / f"{job_hash}.fail"
    try:
        os.replace(armed, armed.with_suffix(".failed"))  # atomic: only one attempt takes it
    except FileNotFoundError:
        return
    raise InjectedFailure(f"{ENV}: this attempt of {job_hash} fails on purpose")


def maybe_freeze_once(job_hash: str) -> None:
    """Stop this attempt's steps for good (its heartbeat thread lives on) if :data:`FREEZE_ENV` arms it."""
    where = os.environ.get(FREEZE_ENV)
    if not where:
        return
    armed = Path(where) / f"{job_hash}.freeze"
    try:
        os.replace(armed, armed.with_suffix(".frozen"))
    except FileNotFoundError:
        return
    while True:  # until the orchestrator kills this process
        time.sleep(1)


def maybe_fail_unless_excluded(job_hash: str) -> None:
    """Fail this SLURM attempt if :data:`EXCLUDE_ENV` arms ``job_hash`` and its SLURM job excludes no node."""
    where, job_id = os.environ.get(EXCLUDE_ENV), os.environ.get("SLURM_JOB_ID")
    if not where or not job_id or not (Path(where) / f"{job_hash}.exclude").is_file():
        return
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                         timeout=60).stdout
    m = re.search(r"ExcNodeList=(\S+)", out)
    if m is None or m.group(1) == "(null)":
        raise InjectedFailure(f"{EXCLUDE_ENV}: this attempt of {job_hash} fails on purpose (no node excluded)")
