"""The job's subset on a compute node: the manifest saved at launch, checked against the dataset.

``launch`` writes the resolved manifest into the job directory (``manifest.json``, see
:mod:`specs.contract`), so a worker never re-runs a subset strategy (no WordNet corpus, accuracy file or
class list needed on compute nodes). The worker still refuses to train when the dataset's fingerprint
is no longer the one the job was launched with, or when the manifest's content does not hash to the
job's ``manifest_hash``. Jobs recorded by dlth-orch versions that saved no manifest are resolved here,
as before.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from specs.contract import JobPaths
from specs.job import JobSpec
from subsets import DatasetMeta, Manifest, ManifestError, resolve

log = logging.getLogger(__name__)


class SubsetChanged(RuntimeError):
    """The dataset or subset no longer matches the manifest the job was launched with."""


def load_manifest(spec: JobSpec, job_dir: str | Path | None = None) -> tuple[DatasetMeta, Manifest]:
    """The dataset metadata and the job's manifest (saved in ``job_dir``, else resolved), both checked."""
    meta = DatasetMeta.load(spec.dataset_root)
    if meta.fingerprint != spec.dataset_fingerprint:
        raise SubsetChanged(
            f"{spec.dataset_root}: fingerprint: expected {spec.dataset_fingerprint} (the dataset the job was "
            f"launched with), found {meta.fingerprint}: the dataset changed; relaunch the grid"
        )
    path = JobPaths.of(job_dir).manifest if job_dir is not None else None
    if path is not None and path.is_file():
        try:
            manifest = Manifest.from_json(path.read_text(), str(path))
        except ManifestError as exc:
            raise SubsetChanged(str(exc)) from None
        manifest = dataclasses.replace(manifest, name=spec.subset_name)  # one file serves every grid's name
    else:  # recorded by a version that saved no manifest
        log.info("no %s: resolving subset %r", path or "manifest file", spec.subset_name)
        manifest = resolve(spec.subset_name, spec.subset, meta)
    if manifest.content_hash != spec.manifest_hash:
        raise SubsetChanged(
            f"subset {spec.subset_name!r} of {spec.dataset_root} has manifest {manifest.content_hash}"
            f"{f' ({path})' if path is not None and path.is_file() else ''}, but the job was launched with "
            f"{spec.manifest_hash}: the dataset or subset changed; relaunch the grid"
        )
    if manifest.dataset_fingerprint != meta.fingerprint:
        raise SubsetChanged(f"{path}: dataset_fingerprint: expected {meta.fingerprint}, found "
                            f"{manifest.dataset_fingerprint}")
    return meta, manifest
