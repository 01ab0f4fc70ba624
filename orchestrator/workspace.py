"""The workspace on disk: one directory per job (spec, manifest, checkpoint, metrics, logs), keyed by job hash.

The names of a job directory's files are :mod:`specs.contract`'s; this module writes what ``launch``
puts there: ``job.json`` and the resolved subset ``manifest.json`` (one file per distinct manifest under
``<workspace>/manifests/``, hard-linked into each job directory).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from db import workspace_dir
from specs import contract
from specs.atomic import write_bytes_atomic, write_text_atomic
from specs.base import LABEL_MAX, SpecError
from specs.contract import JOB_FILE, JobPaths
from specs.job import JobSpec
from subsets import Manifest

log = logging.getLogger(__name__)
__all__ = ["JOB_FILE", "job_dir_for", "job_dir_text", "log_tail", "report_dir", "write_job_file", "write_manifest"]
MANIFESTS_DIR = "manifests"
REPORTS_DIR = "reports"
_UNSAFE_FOLDER = re.compile(r"[/\\\x00-\x1f\x7f]")


def job_dir_for(job_hash: str, root: Path | None = None) -> Path:
    """``<workspace>/jobs/<hash[:2]>/<hash>``: stable, shared by every grid that contains the job."""
    return contract.job_dir_for(job_hash, root or workspace_dir())


def report_dir(name: str) -> Path:
    """``<workspace>/reports/<name>``: the default folder of a report; a name that would leave that folder
    (``..``, a slash, a control character) or make too long a file name is a :class:`SpecError`."""
    if not name or name.startswith(".") or _UNSAFE_FOLDER.search(name) or len(name.encode()) > LABEL_MAX:
        raise SpecError("GRID", f"a report name usable as a folder under {workspace_dir() / REPORTS_DIR} (got "
                                f"{ascii(name)[:80]}); pass --out DIR")
    return workspace_dir() / REPORTS_DIR / name


def write_manifest(manifest: Manifest, root: Path | None = None) -> Path:
    """``<workspace>/manifests/<content_hash>.json`` (atomically, once): the file job directories link to."""
    path = (root or workspace_dir()) / MANIFESTS_DIR / f"{manifest.content_hash}.json"
    if not path.is_file():
        write_text_atomic(path, manifest.to_json())
    return path


def _link(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (a copy where links are not possible); an existing target stays."""
    try:
        os.link(source, target)
    except FileExistsError:
        return
    except OSError:  # another file system, or links not allowed
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)


def job_dir_text(job_hash: str, root: Path) -> str:
    """:func:`job_dir_for` as a string, for an absolute ``root`` such as :func:`~db.workspace_dir` (launch
    builds one per job of a grid: no ``Path`` objects)."""
    return f"{root}/jobs/{job_hash[:2]}/{job_hash}"


def write_job_file(spec: JobSpec, job_dir: str | Path, manifest_file: Path | None = None) -> bool:
    """Write ``job.json`` (atomically) unless it already holds this job, after linking the job's subset
    manifest (``manifest_file``, from :func:`write_manifest`) into the directory; ``True`` if written.

    ``job.json`` is written last, so a directory whose ``job.json`` already holds this text is complete:
    relaunching costs one read per job (a raw read of the expected length plus one byte: a file that
    differs, or one read short, is written again). (The worker creates ``logs/`` when it starts.)"""
    job_file = os.path.join(job_dir, JOB_FILE)  # strings, not pathlib: this runs once per job of a grid
    data = spec.to_json().encode()
    try:
        fd = os.open(job_file, os.O_RDONLY)
    except FileNotFoundError:
        os.makedirs(job_dir, exist_ok=True)
    else:
        try:
            if os.read(fd, len(data) + 1) == data:
                return False
        finally:
            os.close(fd)
    if manifest_file is not None:
        _link(manifest_file, JobPaths.of(job_dir).manifest)
    write_bytes_atomic(job_file, data)
    return True


def log_tail(path: str | Path | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    if not path or not Path(path).is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 16384))
        data = fh.read().decode(errors="replace")
    return "\n".join(data.splitlines()[-lines:])
