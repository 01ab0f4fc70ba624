"""``dlth-orch du``: the bytes a grid takes, by kind of file (hard links counted once per grid)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from db import Store
from orchestrator.provenance.snapshot import code_root
from orchestrator.storage.kinds import CODE, KINDS, LOGS, job_files
from specs.code_version import snapshot_dir


@dataclass
class Usage:
    """Bytes of one grid by kind."""

    grid: str
    jobs: int
    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


class _Tally:
    def __init__(self, usage: Usage) -> None:
        self.usage, self.seen = usage, set[tuple[int, int]]()

    def add(self, path: Path, kind: str) -> None:
        try:
            st = path.stat()
        except OSError:  # removed meanwhile (a running job rotates its checkpoint)
            return
        if (st.st_dev, st.st_ino) in self.seen:
            return
        self.seen.add((st.st_dev, st.st_ino))
        self.usage.by_kind[kind] += st.st_size

    def add_tree(self, root: Path, kind: str) -> None:
        if root.is_dir():
            for p in root.rglob("*"):
                if p.is_file() and not p.is_symlink():
                    self.add(p, kind)


def grid_usage(store: Store, grid_name: str, workspace: Path) -> Usage:
    """What ``grid_name``'s job directories, SLURM submission logs and code snapshots take on disk."""
    jobs = store.jobs(grid_name)
    usage = Usage(grid_name, len(jobs))
    tally = _Tally(usage)
    for job in jobs:
        for path, kind in job_files(Path(job.job_dir)):
            tally.add(path, kind)
    for code in {c for c in store.code_of([j.job_hash for j in jobs]).values() if c}:
        tally.add_tree(snapshot_dir(code_root(workspace), code), CODE)
    if store.get_meta("slurm_db_id") is not None:  # submitted to SLURM once: its submission folders
        from orchestrator.backends.slurm_profile import job_name
        from orchestrator.backends.slurm_submit import grid_dir

        tally.add_tree(grid_dir(job_name(store, grid_name)), LOGS)
    return usage


def human(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
