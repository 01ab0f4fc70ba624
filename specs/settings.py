"""Settings in one place: the environment (``DLTH_*``) and the typed object a backend hands a worker.

:class:`EnvSettings` reads every ``DLTH_*`` variable the product knows, once, with its default.
:class:`WorkerSettings` is what a backend passes to a worker (database URL, heartbeat, backend name and
id, log path): written as a JSON file readable only by the user (mode 0600) and read by
``python -m workers.entry JOB_JSON --settings FILE``, so the database password never appears on a
command line, in a job file or in a SLURM script. Torch-free.

There is ONE such file per grid (:func:`grid_settings_file`): the per-job values that are no secret
(backend id, log path) travel on the worker's command line. The file is removed as soon as no job of
the grid can start a worker any more (its last job ended, ``cancel``): see :data:`LIVE_JOB_STATES`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

from specs.atomic import write_bytes_atomic
from specs.contract import WORKER_SETTINGS_FILE
from specs.lifecycle import JobState

PRIVATE_FILE_MODE = 0o600
DEFAULT_UMASK = 0o077  # everything the product writes is readable only by the user
SETTINGS_DIR = "settings"  # <workspace>/settings/: the grids' worker settings files
#: a grid's settings file is kept while one of its jobs is in one of these states (it may start a worker)
LIVE_JOB_STATES = tuple(s for s in JobState.ALL if s not in JobState.TERMINAL)  # type: ignore[attr-defined]


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"environment {name}={raw!r}: expected a number") from None


@dataclass(frozen=True)
class EnvSettings:
    """Every ``DLTH_*`` environment setting, with its default (see docs/clusters.md, "Reliability and security")."""

    home: Path  # DLTH_HOME: workspace (default ./.dlth)
    db: str | None  # DLTH_DB: database URL
    heartbeat_s: float  # DLTH_HEARTBEAT_S: worker heartbeat interval
    stale_s: float  # DLTH_STALE_S: a RUNNING job without heartbeat for this long is flagged STALE
    db_retries: int  # DLTH_DB_RETRIES: calls of a retried database operation (workers)
    db_wait_s: float  # DLTH_DB_WAIT_S: how long status / launch --wait wait for a database that went away
    sqlite_timeout_s: float  # DLTH_SQLITE_TIMEOUT: SQLite busy timeout (a URL's ?timeout= wins)
    umask: int  # DLTH_UMASK (octal): file creation mask of the CLI and the workers (default 077)

    @classmethod
    def from_env(cls) -> EnvSettings:
        raw_umask = os.environ.get("DLTH_UMASK")
        try:
            umask = int(raw_umask, 8) if raw_umask else DEFAULT_UMASK
        except ValueError:
            raise ValueError(f"environment DLTH_UMASK={raw_umask!r}: expected an octal mask like 077") from None
        return cls(
            home=Path(os.environ.get("DLTH_HOME", ".dlth")).resolve(),
            db=os.environ.get("DLTH_DB") or None,
            heartbeat_s=_float("DLTH_HEARTBEAT_S", 30.0),
            stale_s=_float("DLTH_STALE_S", 600.0),
            db_retries=int(_float("DLTH_DB_RETRIES", 8)),  # about a minute of outage (db.retry)
            db_wait_s=_float("DLTH_DB_WAIT_S", 300.0),
            sqlite_timeout_s=_float("DLTH_SQLITE_TIMEOUT", 60.0),
            umask=umask,
        )


def env_settings() -> EnvSettings:
    """The environment settings now (read each call: tests and launchers change the environment)."""
    return EnvSettings.from_env()


def apply_umask() -> int:
    """Set the process's file creation mask from ``DLTH_UMASK`` (default 077); returns the previous one."""
    return os.umask(env_settings().umask)


def write_private(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, readable and writable only by the user (0600)."""
    return write_bytes_atomic(path, text.encode(), fsync=True, mode=PRIVATE_FILE_MODE)


def grid_settings_file(grid_key: str, workspace: Path | None = None) -> Path:
    """``<workspace>/settings/<digest>.worker_settings.json``: the one settings file of the grid that
    ``grid_key`` names (a database id and the grid's name: two databases may hold grids of one name)."""
    digest = hashlib.sha256(grid_key.encode()).hexdigest()[:16]
    return (workspace or env_settings().home) / SETTINGS_DIR / f"{digest}.{WORKER_SETTINGS_FILE}"


def remove_settings_file(path: str | Path) -> bool:
    """Remove a settings file (no worker of its grid will start any more); ``True`` if there was one."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True


class _JobsOfGrid(Protocol):
    def jobs(self, grid_name: str, states: Iterable[str] | None = None) -> Sequence[object]: ...


def release_if_done(path: str | Path, store: _JobsOfGrid, grid_name: str) -> bool:
    """Remove the settings file ``path`` of ``grid_name`` if none of the grid's jobs (in ``store``, a
    :class:`db.Store`) may start a worker any more; ``True`` if removed."""
    if store.jobs(grid_name, LIVE_JOB_STATES):
        return False
    return remove_settings_file(path)


@dataclass(frozen=True)
class WorkerSettings:
    """What a backend passes to a worker. ``db_url`` may hold a password: it lives only in 0600 files."""

    db_url: str
    backend: str = "local"
    backend_id: str | None = None
    log_path: str | None = None
    heartbeat_s: float = 30.0
    grid: str | None = None  # the grid whose settings file this is (its last job removes it)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "worker settings") -> WorkerSettings:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: expected JSON ({exc.msg})") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(doc, dict) or "db_url" not in doc:
            raise ValueError(f"{source}: db_url: expected the database URL")
        return cls(**{k: v for k, v in doc.items() if k in known})

    def replace(self, **changes: object) -> WorkerSettings:
        return WorkerSettings(**{**asdict(self), **changes})  # type: ignore[arg-type]

    def write(self, path: str | Path) -> Path:
        """Write to ``path`` (mode 0600, atomically)."""
        return write_private(path, self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> WorkerSettings:
        return cls.from_json(Path(path).read_text(), str(path))
