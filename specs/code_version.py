"""Which code a worker runs: the frozen snapshot contract shared by the control plane and the workers.

``launch`` copies the packages a worker imports (:data:`PACKAGES`) into ``<workspace>/code/<code_hash>/``
(see :mod:`orchestrator.provenance.snapshot`) with a marker file :data:`MARKER` at its top. A backend
starts each worker with :func:`code_env`: the snapshot first on ``PYTHONPATH`` (``PYTHONSAFEPATH`` keeps
the working directory off ``sys.path``, so a worker started in the repository does not import the live
tree) and the hash it expects in :data:`CODE_HASH_ENV`. The worker reads the marker next to the
``specs`` package it imported (:func:`running_code_hash`): what it records is the code it really ran.
Torch-free.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: the packages a worker imports (``orchestrator`` is the login node's alone: workers never import it)
PACKAGES = ("db", "specs", "subsets", "workers")
CODE_DIR = "code"  # <workspace>/code/<code_hash>/
MARKER = "DLTH_CODE.json"  # {"code_hash", "files", "bytes"} at the top of a snapshot
CODE_HASH_ENV = "DLTH_CODE_HASH"  # the snapshot a backend started the worker from


class CodeMismatch(RuntimeError):
    """The worker does not run the snapshot its backend named (the snapshot is missing or was replaced)."""


def snapshot_dir(code_root: str | Path, code_hash: str) -> Path:
    """``<code_root>/<code_hash>``: where a snapshot lives."""
    return Path(code_root) / code_hash


def read_marker(root: Path) -> dict | None:
    """The marker of the snapshot rooted at ``root`` (None: not a snapshot, e.g. the live repository)."""
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def running_code_hash() -> str | None:
    """The code hash of the snapshot this process imported ``specs`` from; None for the live repository."""
    marker = read_marker(Path(__file__).resolve().parents[1])
    return str(marker["code_hash"]) if marker and "code_hash" in marker else None


def code_env(code_root: str | Path, code_hash: str, base: dict[str, str]) -> dict[str, str]:
    """The environment variables that start a worker from snapshot ``code_hash`` (given ``base``'s PYTHONPATH)."""
    path = str(snapshot_dir(code_root, code_hash))
    rest = base.get("PYTHONPATH", "")
    return {"PYTHONPATH": path + (os.pathsep + rest if rest else ""), "PYTHONSAFEPATH": "1",
            CODE_HASH_ENV: code_hash}


def check_running_code(environ: dict[str, str] | None = None) -> str | None:
    """The running code hash; :class:`CodeMismatch` (one line) when it is not the one the backend named."""
    env = os.environ if environ is None else environ
    expected, actual = env.get(CODE_HASH_ENV), running_code_hash()
    if expected and actual != expected:
        where = f"snapshot {actual}" if actual else f"the live code in {Path(__file__).resolve().parents[1]}"
        raise CodeMismatch(f"code: expected snapshot {expected} but this worker runs {where} (the snapshot "
                           "is missing from <workspace>/code; relaunch with --code current)")
    return actual
