"""Test-only fault injection, off unless the environment asks for it (the real SLURM tests need a parent
job that fails its first attempt deterministically, so that its child's dependency can never be met).

``DLTH_TEST_FREEZE_ONCE=<directory>``: a job whose hash has an armed marker ``<directory>/<hash>.freeze``
stops stepping once (the marker is renamed ``<hash>.frozen``) while its heartbeat goes on: a stall.

``DLTH_TEST_FAIL_ONCE=<directory>``: a job whose hash has an armed marker ``<directory>/<hash>.fail``
fails once (the marker is renamed ``<hash>.failed``); every other attempt runs normally. Single-rank jobs
only (another rank would not fail with it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "DLTH_TEST_FAIL_ONCE"
FREEZE_ENV = "DLTH_TEST_FREEZE_ONCE"


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
