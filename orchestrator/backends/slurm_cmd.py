"""Running SLURM's command-line tools: one place, so every call is logged, timed out and counted."""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
from collections import Counter

log = logging.getLogger(__name__)
COMMANDS = Counter()  # tool name -> calls made by this process (benchmarks and tests read it)
TIMEOUT_S = 120.0


class SlurmError(RuntimeError):
    """A SLURM command failed (or SLURM is not installed)."""


def slurm_available() -> bool:
    """True if the SLURM client tools are on PATH."""
    return all(shutil.which(t) for t in ("sbatch", "sacct", "squeue", "scontrol", "scancel"))


def run_slurm(args: list[str], *, check: bool = True, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a SLURM tool with times printed in UTC (``TZ=UTC``); raise :class:`SlurmError` if it fails."""
    COMMANDS[args[0]] += 1
    env = {**os.environ, "TZ": "UTC", "SLURM_TIME_FORMAT": "standard"}
    log.debug("running %s", " ".join(args))
    try:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    except FileNotFoundError as exc:
        raise SlurmError(f"{args[0]}: not found (is SLURM installed on this machine?)") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{args[0]}: no answer within {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        raise SlurmError(f"{' '.join(args[:3])}...: exit {proc.returncode}: {proc.stderr.strip()[:500]}")
    return proc


def cluster_config() -> dict[str, str]:
    """``scontrol show config`` as a dict (read once per process and ``SLURM_CONF``)."""
    return _cluster_config(os.environ.get("SLURM_CONF", ""))


@functools.lru_cache(maxsize=4)
def _cluster_config(_slurm_conf: str) -> dict[str, str]:
    out = run_slurm(["scontrol", "show", "config"]).stdout
    conf: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"^(\w+)\s*=\s*(.*)$", line.strip())
        if m:
            conf[m.group(1)] = m.group(2).strip()
    return conf


def max_array_size(fallback: int) -> int:
    """The cluster's ``MaxArraySize`` (array indices run 0..MaxArraySize-1), else ``fallback``."""
    try:
        value = cluster_config().get("MaxArraySize", "")
    except SlurmError as exc:
        log.warning("cannot read MaxArraySize (%s): using %d", exc, fallback)
        return fallback
    return int(value) if value.isdigit() and int(value) > 0 else fallback


def scancel(ids: list[str]) -> None:
    """Cancel SLURM jobs or array tasks (one command for all of them)."""
    for i in range(0, len(ids), 500):
        run_slurm(["scancel", *ids[i:i + 500]], check=False)
