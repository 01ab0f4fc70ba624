"""The launch step that freezes the code: snapshot the worker packages, read git and package versions,
record the launch and point the grid's jobs at the snapshot.

``code="launch"`` (the default): jobs keep the code they were launched with; only jobs without a code
version (new ones) get this launch's snapshot. ``code="current"``: jobs that have not started yet are
re-pointed too (never a RUNNING or COMPLETED one, nor one with attempts: its checkpoint came from its code).
A dirty tree launches with one warning line naming the changed files; ``require_clean`` refuses it first,
before the grid is even read (:func:`read_source`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from db import NewLaunch, Store
from orchestrator.provenance import environment
from orchestrator.provenance.gitinfo import GitState, git_state
from orchestrator.provenance.snapshot import Snapshot, package_dirs, take_snapshot

log = logging.getLogger(__name__)
CODE_MODES = ("launch", "current")
NAMED_FILES = 8  # changed files the warning names before "and N more"


class DirtyTree(ValueError):
    """``--require-clean`` and the code has uncommitted changes (one line)."""


@dataclass(frozen=True)
class Frozen:
    """A launch's frozen code and its provenance, ready to record once the grid is."""

    snapshot: Snapshot
    git: GitState
    launch: NewLaunch

    def record(self, store: Store, grid_name: str) -> list[str]:
        """Record the launch and point the grid's jobs at the snapshot; returns the jobs (re)pointed."""
        store.record_launch(grid_name, self.launch)
        moved = store.point_code(grid_name, self.snapshot.code_hash, repoint=self.launch.code_mode == "current")
        if self.launch.code_mode == "current" and moved:
            log.info("%d jobs that had not started now run code %s", len(moved), self.snapshot.code_hash)
        return moved

    def describe(self) -> str:
        """One line: the code hash, whether it is new, its commit and dirty state."""
        s, g = self.snapshot, self.git
        commit = "no git commit" if g.commit is None else f"commit {g.commit[:12]}" + (" + diff" if g.dirty else "")
        return f"code {s.code_hash} ({'new snapshot' if s.created else 'snapshot reused'}, {commit})"


def _names(changed: tuple[str, ...]) -> str:
    more = len(changed) - NAMED_FILES
    return ", ".join(changed[:NAMED_FILES]) + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class CodeSource:
    """The code this process would hand its workers: the packages' directories and their git state."""

    packages: dict[str, Path]
    git: GitState


def read_source(*, require_clean: bool = False) -> CodeSource:
    """Locate the worker packages and read their git state; writes nothing. A dirty tree is refused with
    :class:`DirtyTree` under ``require_clean`` (else :func:`freeze` warns)."""
    packages = package_dirs()
    root = next(iter(packages.values())).parent
    git = git_state(root)
    if git.dirty and require_clean:
        raise DirtyTree(f"--require-clean: {root} has uncommitted changes in {_names(git.changed)}; "
                        "commit or stash them")
    return CodeSource(packages, git)


def freeze(workspace: Path, source: CodeSource, *, code: str = "launch") -> Frozen:
    """Snapshot ``source`` into the workspace and gather the launch's provenance (nothing in the database yet)."""
    if code not in CODE_MODES:
        raise ValueError(f"--code: expected one of {', '.join(CODE_MODES)}, got {code!r}")
    git = source.git
    if git.dirty:  # one line naming the changed files
        log.warning("launching uncommitted code (the diff is recorded): %s", _names(git.changed))
    snap = take_snapshot(workspace, source.packages)
    launch = NewLaunch(code_hash=snap.code_hash, code_mode=code, git_commit=git.commit, git_dirty=git.dirty,
                       git_changed=git.changed, git_diff=git.diff, python=environment.python_version(),
                       packages=environment.package_versions(), host=environment.host(),
                       command_line=environment.command_line())
    return Frozen(snap, git, launch)
