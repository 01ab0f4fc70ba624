"""Which kind each file of a job directory is (``du`` sums by kind, ``gc`` removes by kind)."""

from __future__ import annotations

from pathlib import Path

from specs.contract import (
    CHECKPOINT_FILE,
    EPOCH_METRICS_FILE,
    FINAL_METRICS_FILE,
    FINAL_WEIGHTS_FILE,
    JOB_FILE,
    LOG_DIR,
    MANIFEST_FILE,
    MASK_FILE,
    PROBE_CHECKPOINT_FILE,
    REWIND_FILE,
    RNG_DIR,
    SPARSITY_FILE,
    WORKER_SETTINGS_FILE,
    previous_of,
)

CHECKPOINTS, FINAL_WEIGHTS, MASKS, LOGS, MANIFESTS, CODE, OTHER = (
    "checkpoints", "final_weights", "masks", "logs", "manifests", "code", "other")
KINDS = (CHECKPOINTS, FINAL_WEIGHTS, MASKS, LOGS, MANIFESTS, CODE, OTHER)

_BY_NAME = {
    CHECKPOINT_FILE: CHECKPOINTS, PROBE_CHECKPOINT_FILE: CHECKPOINTS,
    FINAL_WEIGHTS_FILE: FINAL_WEIGHTS,
    MASK_FILE: MASKS, REWIND_FILE: MASKS, SPARSITY_FILE: MASKS,
    JOB_FILE: MANIFESTS, MANIFEST_FILE: MANIFESTS, EPOCH_METRICS_FILE: MANIFESTS, FINAL_METRICS_FILE: MANIFESTS,
    WORKER_SETTINGS_FILE: MANIFESTS,
}
for _name, _kind in list(_BY_NAME.items()):
    if _kind == CHECKPOINTS:
        _BY_NAME[previous_of(Path(_name)).name] = CHECKPOINTS


def kind_of(rel: Path) -> str:
    """The kind of the file at ``rel`` (relative to its job directory)."""
    top = rel.parts[0]
    if top == RNG_DIR:
        return CHECKPOINTS
    if top == LOG_DIR:
        return LOGS
    return _BY_NAME.get(top, OTHER) if len(rel.parts) == 1 else OTHER


def job_files(job_dir: Path) -> list[tuple[Path, str]]:
    """Every regular file under ``job_dir`` with its kind (none if the directory does not exist)."""
    if not job_dir.is_dir():
        return []
    return [(p, kind_of(p.relative_to(job_dir))) for p in sorted(job_dir.rglob("*")) if p.is_file()
            and not p.is_symlink()]
