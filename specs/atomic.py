"""Atomic file writes, the one helper of the product: write a temporary file next to the target, then
rename it over the target (``os.replace``), so a reader sees the old file or the new one, never half a
file, and a kill mid-write leaves at most a hidden ``.<stem>.<pid>.<thread>.<n>.tmp<suffix>`` behind.

The temporary file is created with the process's umask (like ``open``), in the target's directory
(a rename is atomic only within one file system). ``fsync=True`` flushes the data to disk before the
rename and the directory after it, for results that must survive a crash of the node
(``final_metrics.json``, checkpoints).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_counter = itertools.count()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush the directory ``path`` (its entries: a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    """A hidden name next to ``path``, unique per process and thread, ending in ``path``'s suffix (writers
    such as ``np.save`` append their suffix to a path that lacks it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident() % 10**6}.{next(_counter)}.tmp"
                          f"{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path for a writer that needs a path (``torch.save``, ``np.save``, a pickler);
    when the block ends without an exception, move it to ``path``; otherwise remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False,
                       mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (creating the parent directory); return the path. ``mode``
    (e.g. 0o600 for a file holding a secret) is set on the file before any byte is written to it."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    return write_bytes_atomic(path, text.encode(), fsync=fsync)


def write_json_atomic(
    path: str | os.PathLike[str], doc: Any, *, indent: int | None = 1, sort_keys: bool = False,
    fsync: bool = False,
) -> Path:
    """Write ``doc`` as JSON to ``path`` atomically; return the path."""
    return write_text_atomic(path, json.dumps(doc, indent=indent, sort_keys=sort_keys), fsync=fsync)
