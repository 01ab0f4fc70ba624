"""Is a SQLite file on a network file system? (SQLite's locking and WAL do not work across hosts there.)

The file system type comes from the mount table (``/proc/mounts``): the longest mount point that holds
the file wins. :func:`check_sqlite_location` applies the policy: a worker on another host than the
orchestrator is refused, anyone else is warned. ``MOUNTS_FILE`` and :func:`hostname` are module-level so
that tests can point them at a fabricated mount table and host (a multi-node NFS cannot exist here).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

from db.engine import StoreError

log = logging.getLogger(__name__)

MOUNTS_FILE = "/proc/mounts"

# file system types that several hosts mount at once (SQLite's POSIX locks and WAL's shared memory
# do not reach across them)
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "lustre", "gpfs", "beegfs", "panfs",
    "pvfs2", "orangefs", "ceph", "glusterfs", "ocfs2", "gfs2", "wekafs", "quobyte", "davfs", "juicefs",
    "fuse.sshfs", "fuse.cephfs", "fuse.glusterfs", "fuse.beegfs", "fuse.quobyte", "fuse.juicefs",
    "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.lustre", "fuse.davfs",
})

_warned: set[str] = set()


def hostname() -> str:
    """This host's name (short form), as compared with the orchestrator's."""
    return socket.gethostname().split(".")[0]


def _unescape(field: str) -> str:
    """Mount table fields escape space, tab, newline and backslash as ``\\ooo`` octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _existing_ancestor(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.resolve()


def mount_of(path: str | os.PathLike[str], mounts_file: str | None = None) -> tuple[str, str] | None:
    """``(mount_point, fstype)`` of the mount holding ``path`` (or its nearest existing parent)."""
    target = _existing_ancestor(Path(path))
    try:
        lines = Path(mounts_file or MOUNTS_FILE).read_text().splitlines()
    except OSError:
        return None
    best: tuple[str, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point, fstype = _unescape(fields[1]), fields[2]
        mp = Path(point)
        if (target == mp or mp in target.parents) and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def network_fs_type(path: str | os.PathLike[str], mounts_file: str | None = None) -> str | None:
    """The network file system type under ``path`` (``"nfs4"``, ``"lustre"``, ...) or ``None``."""
    found = mount_of(path, mounts_file)
    if found is None:
        return None
    fstype = found[1].lower()
    return fstype if fstype in NETWORK_FS_TYPES or fstype.startswith("nfs") else None


def check_sqlite_location(
    path: Path, *, worker: bool, orchestrator_host: str | None, this_host: str | None = None,
    mounts_file: str | None = None,
) -> str | None:
    """Refuse or warn when the SQLite file ``path`` lies on a network file system; return its type.

    A worker (``worker=True``) on another host than the orchestrator (``orchestrator_host``, as the
    orchestrator recorded it in the database) is refused with :class:`StoreError`; the orchestrator,
    or a worker on its host, gets a warning (once per file and process).
    """
    fstype = network_fs_type(path, mounts_file)
    if fstype is None:
        return None
    this_host = this_host or hostname()
    advice = "use PostgreSQL for a cluster (--db postgresql+psycopg://USER:PASSWORD@HOST/DB or DLTH_DB)"
    if worker and orchestrator_host and orchestrator_host != this_host:
        raise StoreError(
            f"database {path}: SQLite file on a network file system ({fstype}) used by a worker on host "
            f"{this_host!r} while the orchestrator runs on {orchestrator_host!r}; SQLite locking does not work "
            f"across hosts: {advice}")
    key = f"{path}:{worker}"
    if key not in _warned:
        _warned.add(key)
        log.warning("database %s: SQLite file on a network file system (%s): safe only while every process "
                    "using it runs on this host (%s); workers on other hosts will be refused: %s",
                    path, fstype, this_host, advice)
    return fstype
