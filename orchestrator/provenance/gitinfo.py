"""Git state of the code a launch freezes: commit, changed files and the diff (all read-only git calls).

Only the worker packages count (:data:`specs.code_version.PACKAGES`): commit + diff reproduce the snapshot.
Code that is not a git checkout (an installed wheel, a copied tree) has no commit and an unknown dirty flag.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

from specs.code_version import PACKAGES

log = logging.getLogger(__name__)
GIT_TIMEOUT_S = 30


@dataclass(frozen=True)
class GitState:
    """``commit`` None: not a git checkout. ``changed``: files (tracked or not) that differ from the commit."""

    commit: str | None
    changed: tuple[str, ...] = ()
    diff: str = ""

    @property
    def dirty(self) -> bool | None:
        return None if self.commit is None else bool(self.changed)


def _git(root: Path, *args: str, ok: tuple[int, ...] = (0,)) -> str | None:
    """``git -C root ARGS``'s output, or None when git is missing, slow or exits with a code not in ``ok``."""
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode in ok else None


def git_state(root: Path, packages: tuple[str, ...] = PACKAGES) -> GitState:
    """The git state of ``packages`` under ``root`` (their common parent directory)."""
    if not (_git(root, "ls-files", "--", f"{packages[0]}/__init__.py") or "").strip():
        return GitState(None)  # not tracked here: no commit describes this code (or git is missing)
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    top = (_git(root, "rev-parse", "--show-toplevel") or "").strip()
    if commit is None or not top:
        return GitState(None)
    status = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *packages) or ""
    changed = tuple(sorted(line[3:].split(" -> ")[-1] for line in status.splitlines() if len(line) > 3))
    diff = (_git(root, "diff", "--binary", "HEAD", "--", *packages) or "") if changed else ""
    for line in status.splitlines():  # new files are part of the snapshot too: the diff shows them
        if line.startswith("??"):  # (porcelain paths are relative to the top level; --no-index exits 1)
            diff += _git(Path(top), "diff", "--binary", "--no-index", "/dev/null", line[3:], ok=(0, 1)) or ""
    return GitState(commit, changed, diff)
