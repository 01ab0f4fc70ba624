"""Test-only fault injection and timing points, off unless a test asks for them.

``DLTH_TEST_FREEZE_ONCE=<directory>``: a job whose hash has an armed marker ``<directory>/<hash>.freeze``
stops stepping once (the marker is renamed ``<hash>.frozen``) while its heartbeat goes on: a stall.

``DLTH_TEST_FAIL_UNLESS_EXCLUDED=<directory>``: a SLURM attempt of a job armed with ``<hash>.exclude`` fails
unless its SLURM job excludes a node (``ExcNodeList`` in ``scontrol show job``): the node exclusion's test.

``DLTH_TEST_FAIL_ONCE=<directory>``: a job whose hash has an armed marker ``<directory>/<hash>.fail``
fails once (the marker is renamed ``<hash>.failed``); every other attempt runs normally. Single-rank jobs
only (another rank would not fail with it). The real SLURM tests use it for a parent job that fails its
first attempt deterministically, so that its child's dependency can never be met.

Points (:data:`EPOCH_SAVED`: rank 0 saved an epoch checkpoint; :data:`ENDED`: the worker recorded how its
attempt ended and is about to exit) let a test act at the right moment instead of sleeping and hoping:

- in the test's own process, :func:`on` calls a function each time a worker reaches a point;
- in worker processes, ``DLTH_TEST_PAUSE=<directory>``: a worker reaching ``point`` with an armed marker
  ``<directory>/<hash>.<point>`` renames it ``<hash>.<point>.paused`` (once: the test sees it got there)
  and waits until the test deletes that file (at most :data:`PAUSE_MAX_S`).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "DLTH_TEST_FAIL_ONCE"
FREEZE_ENV = "DLTH_TEST_FREEZE_ONCE"
EXCLUDE_ENV = "DLTH_TEST_FAIL_UNLESS_EXCLUDED"
PAUSE_ENV = "DLTH_TEST_PAUSE"
EPOCH_SAVED = "epoch_saved"
ENDED = "ended"
PAUSE_MAX_S = 600.0

_callbacks: dict[str, list[Callable[[str], None]]] = {}


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


@contextmanager
def on(point: str, fn: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, call ``fn(job_hash)`` whenever a worker of this process reaches ``point``."""
    _callbacks.setdefault(point, []).append(fn)
    try:
        yield
    finally:
        _callbacks[point].remove(fn)


def reached(point: str, job_hash: str) -> None:
    """A worker reached ``point`` with ``job_hash``: call the :func:`on` functions, and pause if
    :data:`PAUSE_ENV` names a directory where this point is armed for this job."""
    for fn in list(_callbacks.get(point, ())):
        fn(job_hash)
    where = os.environ.get(PAUSE_ENV)
    if not where:
        return
    armed = Path(where) / f"{job_hash}.{point}"
    paused = armed.with_name(f"{armed.name}.paused")
    try:
        os.replace(armed, paused)
    except FileNotFoundError:
        return
    log.warning("%s: job %s paused at %s until %s is deleted", PAUSE_ENV, job_hash, point, paused)
    deadline = time.monotonic() + PAUSE_MAX_S
    while paused.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
