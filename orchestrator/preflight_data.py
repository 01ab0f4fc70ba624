"""Pre-flight of a grid's data: every ``.beton`` opens, holds the samples its metadata says, and carries
the labels the metadata's fingerprint was computed from; the dataset root is readable where jobs run.

Only FFCV's header, field descriptors, per-sample metadata table and allocation table are read (never
the image data), with numpy alone (:mod:`orchestrator.beton_header`; FFCV is never imported, so no numba
compilation): about 40 bytes per sample, so a 1.28M-image ImageNet ``.beton`` is checked in well under a
second. A problem is one :class:`~subsets.DatasetMetaError` line naming the file.

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

from orchestrator.beton_header import check_alloc_table, read_alloc_table, read_header, read_metadata
from subsets import DatasetMeta, DatasetMetaError

log = logging.getLogger(__name__)
NODE_LOCAL_PREFIXES = ("/tmp", "/var/tmp", "/dev/shm", "/run")
LABEL_FIELD = "label"


def check_beton(path: Path, expected_labels: np.ndarray, fingerprint: str) -> None:
    """Raise :class:`DatasetMetaError` unless ``path`` is a complete FFCV file with ``expected_labels``."""
    header = read_header(path)
    n = header.num_samples
    if n != len(expected_labels):
        raise DatasetMetaError(path, "num_samples", f"{len(expected_labels)} samples as meta.json says "
                                                    f"(the file has {n})")
    check_alloc_table(header, read_alloc_table(header))
    if LABEL_FIELD in header.field_names:
        labels = np.asarray(read_metadata(header)[LABEL_FIELD]).reshape(n)
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
