"""Processes on this machine: the one ``pid_alive`` of the product (backends, SLURM tasks, data writers)."""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """True while process ``pid`` runs: it exists and is not a zombie waiting to be reaped (never reaps it).

    A process of another user (``kill`` refused with EPERM) counts as alive."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:  # a zombie still answers kill(0): check its state
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False
