"""The code snapshot: the packages a worker imports (:data:`specs.code_version.PACKAGES`, their package
data included), copied into ``<workspace>/code/<code_hash>/`` once per distinct content.

The hash covers every file's relative path and bytes (``__pycache__``, ``*.pyc`` and hidden files are not
code). A snapshot is written to a temporary directory, byte-compiled, and renamed into place, so a reader never
sees half of one and ten launches of one tree keep one copy; its source files are made read-only.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from specs.code_version import CODE_DIR, MARKER, PACKAGES, read_marker, snapshot_dir

log = logging.getLogger(__name__)
HASH_LENGTH = 16
READ_ONLY = 0o444


def read_only_mode() -> int:
    """Read-only for whom the umask lets read (the workspace is the user's alone under the default 077)."""
    mask = os.umask(0)
    os.umask(mask)
    return READ_ONLY & ~mask


@dataclass(frozen=True)
class Snapshot:
    """A snapshot in the workspace: its hash, where it lives, what it holds, and whether this call wrote it."""

    code_hash: str
    path: Path
    files: int
    bytes: int
    created: bool


def package_dirs() -> dict[str, Path]:
    """``{package: directory}`` of the worker packages this process imports (the code a launch freezes)."""
    out = {}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"code snapshot: package {name!r} not found on sys.path")
        out[name] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return out


def source_files(packages: dict[str, Path]) -> list[tuple[str, Path]]:
    """``(relative path, file)`` of every file of ``packages``, sorted (what the hash and the copy cover)."""
    out = []
    for name, root in packages.items():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
            for f in filenames:
                if f.startswith(".") or f.endswith((".pyc", ".pyo")):
                    continue
                path = Path(dirpath) / f
                out.append((f"{name}/{path.relative_to(root).as_posix()}", path))
    return sorted(out)


def code_hash(files: list[tuple[str, Path]]) -> str:
    """The content hash of ``files``: sha256 over each relative path and its bytes, in order."""
    digest = hashlib.sha256()
    for rel, path in files:
        digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:HASH_LENGTH]


def code_root(workspace: Path) -> Path:
    """``<workspace>/code`` (absolute: compute nodes read it from elsewhere)."""
    return (workspace / CODE_DIR).resolve()


def take_snapshot(workspace: Path, packages: dict[str, Path] | None = None) -> Snapshot:
    """Snapshot ``packages`` (default: :func:`package_dirs`) into ``<workspace>/code``; reuse an existing copy."""
    files = source_files(packages or package_dirs())
    h = code_hash(files)
    root = code_root(workspace)
    final = snapshot_dir(root, h)
    size = sum(p.stat().st_size for _, p in files)
    if read_marker(final) is not None:
        return Snapshot(h, final, len(files), size, created=False)
    tmp = root / f".tmp-{h}-{uuid.uuid4().hex[:8]}"
    try:
        for rel, src in files:
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            dst.chmod(read_only_mode())
        # compiled once here, not by hundreds of array tasks racing to write __pycache__ on a shared file system
        compileall.compile_dir(str(tmp), quiet=2, ddir=str(final))
        marker = tmp / MARKER
        marker.write_text(json.dumps({"code_hash": h, "files": len(files), "bytes": size}, indent=1))
        marker.chmod(read_only_mode())
        try:
            tmp.rename(final)
        except OSError:  # another launch renamed the same content first
            if read_marker(final) is None:
                raise
            return Snapshot(h, final, len(files), size, created=False)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("code snapshot %s: %d files, %d bytes in %s", h, len(files), size, final)
    return Snapshot(h, final, len(files), size, created=True)
