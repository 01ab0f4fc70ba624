"""Pre-flight of a grid's data: every ``.beton`` opens, holds the samples its metadata says, and carries
the labels the metadata's fingerprint was computed from; the dataset root is readable where jobs run.

Only FFCV's header, field descriptors, per-sample metadata table and allocation table are read (never
the image data): about 40 bytes per sample, so a 1.28M-image ImageNet ``.beton`` is checked in well
under a second. A problem is one :class:`~subsets.DatasetMetaError` line naming the file.

Node-local paths on SLURM (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run`` or any tmpfs): compute nodes
other than this one cannot see them. On a cluster of several nodes the launch is refused; on a
single-node cluster (the node that launches is the node that runs) it is only a warning, since such a
path does work there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from subsets import DatasetMeta, DatasetMetaError

log = logging.getLogger(__name__)
NODE_LOCAL_PREFIXES = ("/tmp", "/var/tmp", "/dev/shm", "/run")
LABEL_FIELD = "label"


def _ffcv_types():  # noqa: ANN202
    from workers.data._ffcv import import_ffcv

    import_ffcv()
    from ffcv import types

    return types


def check_beton(path: Path, expected_labels: np.ndarray, fingerprint: str) -> None:
    """Raise :class:`DatasetMetaError` unless ``path`` is a complete FFCV file with ``expected_labels``."""
    types = _ffcv_types()
    if not path.is_file():
        raise DatasetMetaError(path, "file", "an FFCV .beton file (it is missing)")
    if not os.access(path, os.R_OK):
        raise DatasetMetaError(path, "file", "a readable file (permission denied)")
    size = path.stat().st_size
    header_t = types.HeaderType
    if size < header_t.itemsize:
        raise DatasetMetaError(path, "header", f"an FFCV header of {header_t.itemsize} bytes (the file has {size}: "
                                               "truncated)")
    header = np.fromfile(path, dtype=header_t, count=1)[0]
    if int(header["version"]) != types.CURRENT_VERSION:
        raise DatasetMetaError(path, "version", f"FFCV format {types.CURRENT_VERSION} (got {int(header['version'])}:"
                                                " not a .beton file, or written by another FFCV)")
    n, n_fields = int(header["num_samples"]), int(header["num_fields"])
    if n != len(expected_labels):
        raise DatasetMetaError(path, "num_samples", f"{len(expected_labels)} samples as meta.json says "
                                                    f"(the file has {n})")
    desc_end = header_t.itemsize + n_fields * types.FieldDescType.itemsize
    if size < desc_end:
        raise DatasetMetaError(path, "fields", f"{n_fields} field descriptors (the file has {size} bytes: truncated)")
    descs = np.fromfile(path, dtype=types.FieldDescType, count=n_fields, offset=header_t.itemsize)
    try:
        handlers = types.get_handlers(descs)
        meta_t = types.get_metadata_type(handlers)
    except Exception as exc:  # noqa: BLE001  (garbage descriptors: whatever FFCV raises)
        raise DatasetMetaError(path, "fields", f"valid FFCV field descriptors ({type(exc).__name__}: {exc})") from None
    meta_end = desc_end + n * meta_t.itemsize
    table_at = int(header["alloc_table_ptr"])
    alloc_t = types.ALLOC_TABLE_TYPE
    if size < meta_end or table_at < meta_end or table_at > size or (size - table_at) % alloc_t.itemsize:
        raise DatasetMetaError(path, "size", f"a complete file: its allocation table starts at byte {table_at}, "
                                             f"the file has {size} bytes (truncated or overwritten)")
    table = np.fromfile(path, dtype=alloc_t, offset=table_at)
    if len(table) and (int(table["sample_id"].max()) >= n
                       or int((table["ptr"] + table["size"]).max()) > table_at):
        raise DatasetMetaError(path, "allocation table", "sample data inside the file (it points past the data "
                                                         "region: the file is damaged)")
    names = [bytes(d["name"]).split(b"\0", 1)[0].decode(errors="replace") for d in descs]
    if LABEL_FIELD in names:
        metadata = np.fromfile(path, dtype=meta_t, count=n, offset=desc_end)
        labels = np.asarray(metadata[metadata.dtype.names[names.index(LABEL_FIELD)]]).reshape(n)
        diff = np.flatnonzero(labels.astype(np.int64) != expected_labels)
        if len(diff):
            raise DatasetMetaError(path, "labels", f"the labels of the metadata (fingerprint {fingerprint}); "
                                                   f"{len(diff)} samples differ, the first is sample {int(diff[0])}")


def node_local(path: Path) -> bool:
    """True if ``path`` lies on a node-local file system (tmp directories, tmpfs)."""
    p = str(path.resolve())
    if any(p == pre or p.startswith(pre + "/") for pre in NODE_LOCAL_PREFIXES):
        return True
    best, fstype = "", ""
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and (p == parts[1] or p.startswith(parts[1].rstrip("/") + "/")) \
                        and len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
    except OSError:
        return False
    return fstype == "tmpfs"


def _slurm_nodes() -> int:
    from orchestrator.backends.slurm_cmd import SlurmError, run_slurm

    try:
        out = run_slurm(["sinfo", "-h", "-N", "-o", "%N"]).stdout
    except SlurmError:
        return 0
    return len(set(out.split()))


def check_data(meta: DatasetMeta, cluster: str) -> None:
    """The grid's data pre-flight (see the module docstring); raises :class:`DatasetMetaError`."""
    root = meta.root
    if not os.access(root, os.R_OK | os.X_OK):
        raise DatasetMetaError(root, "dataset.root", "a directory the jobs can read (permission denied)")
    fingerprint = meta.fingerprint
    for split in meta.split_files:
        check_beton(meta.beton_path(split), meta.labels[split], fingerprint)
    if cluster == "slurm" and node_local(root):
        nodes = _slurm_nodes()
        if nodes > 1:
            raise DatasetMetaError(root, "dataset.root", f"a path every compute node shares (it is node-local, "
                                                         f"and the cluster has {nodes} nodes)")
        log.warning("%s: dataset.root is node-local: only jobs on this node can read it (fine on a "
                    "single-node cluster; on several nodes use a shared file system)", root)
