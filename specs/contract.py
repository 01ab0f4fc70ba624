"""A job's contract: every file of a job directory, named once (as open_lth's ``foundations/paths.py``).

A job is a directory named by its hash (``<workspace>/jobs/<hash[:2]>/<hash>``). The control plane
writes the spec and the resolved subset manifest at launch; the worker writes checkpoints, metrics,
the final result and the artifacts a dependent job reads (trained weights, a pruning mask, a rewind
point). Every package reads these names from here; nobody spells a file name of a job directory
anywhere else.

Formats:
- ``job.json``: :meth:`specs.job.JobSpec.to_json`.
- ``manifest.json``: the resolved subset, :meth:`subsets.base.Manifest.to_json` (``classes``, ``indices``
  per split, ``content_hash``, the strategy and its identity parameters). Jobs with the same subset
  share one file (hard links to ``<workspace>/manifests/<content_hash>.json``).
- ``checkpoint.pt``: the epoch checkpoint (``torch.save`` dict with ``epoch``, ``model``, ..., and rank 0's
  RNG states as tensors: every file of a job loads with ``torch.load(weights_only=True)``);
  ``checkpoint.prev.pt`` the one before it, kept until the new one is durable; ``rng/rank<r>.pt`` (and
  ``rng/rank<r>.prev.pt``) the RNG states of rank ``r`` > 0 at the end of an epoch (``{"epoch", ...}``).
- ``metrics.jsonl``: one JSON object per epoch (``{"epoch": e, "values": {...}}``).
- ``final_metrics.json``: ``{"job_hash", "metrics", "epoch_metrics"}`` (see ``db.result_file``).
- ``final_weights.pt``: ``{"job_hash", "backbone": state_dict, "model": state_dict}``, the trained
  model a child job starts from (``init = { from = ..., checkpoint = "final" }``); ``backbone`` is the
  method's evaluation network (``specs.methods.eval_network``: DINO's teacher, else the online backbone).
- ``linear_probe.pt``: the linear-probe evaluation's checkpoint (``{"job_hash", "stage", "epoch",
  "head", "optimizer", "scores"}``: which head of the lr sweep, its epoch, the held-out scores so far), so
  a job stopped during the probe resumes it without training the backbone again.
- ``mask.pt`` / ``rewind.pt`` / ``sparsity.json``: lottery-ticket artifacts (pruning mask of a level,
  the weights its survivors rewind to, the per-layer sparsity report).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

JOB_FILE = "job.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_SUFFIX = ".prev"  # checkpoint.pt -> checkpoint.prev.pt: the previous durable copy of a file
PREVIOUS_CHECKPOINT_FILE = f"checkpoint{PREVIOUS_SUFFIX}.pt"
RNG_DIR = "rng"  # rank<r>.pt: the RNG states of rank r > 0
EPOCH_METRICS_FILE = "metrics.jsonl"
FINAL_METRICS_FILE = "final_metrics.json"
FINAL_WEIGHTS_FILE = "final_weights.pt"
PROBE_CHECKPOINT_FILE = "linear_probe.pt"
MASK_FILE = "mask.pt"
REWIND_FILE = "rewind.pt"
SPARSITY_FILE = "sparsity.json"
WORKER_SETTINGS_FILE = "worker_settings.json"
PROGRESS_FILE = "progress.json"  # the heartbeat's step counter (workers.reporting, orchestrator.stall)
LOG_DIR = "logs"
TENSORBOARD_DIR = "tensorboard"  # rank 0's TensorBoard event files: one run per job, step = epoch
STALE_DIR = "stale"  # stale/<code_hash>/: the outputs of a run made stale by newer code (``retry --stale``)
#: files every job directory holds once it was recorded (``launch``), before any worker ran
RECORDED_FILES = (JOB_FILE, MANIFEST_FILE)

# A SLURM submission directory (``<workspace>/slurm/<job name>/<token>/``, one per array): the array's
# tasks in index order, written before ``sbatch`` and read by each task (``workers.slurm_env``).
ARRAY_MANIFEST_FILE = "manifest.json"
ARRAY_ID_FILE = "array_id"


def previous_of(path: Path) -> Path:
    """The previous durable copy of ``path`` (``checkpoint.pt`` -> ``checkpoint.prev.pt``)."""
    return path.with_name(f"{path.stem}{PREVIOUS_SUFFIX}{path.suffix}")


def job_dir_for(job_hash: str, workspace: Path) -> Path:
    """``<workspace>/jobs/<hash[:2]>/<hash>``: stable, shared by every grid that contains the job."""
    return Path(f"{workspace}/jobs/{job_hash[:2]}/{job_hash}")  # one Path, not three joins: once per job


def sibling_job_dir(job_dir: str | Path, job_hash: str) -> Path:
    """The directory of job ``job_hash`` in the same workspace as ``job_dir`` (a child finds its parents)."""
    return Path(job_dir).parent.parent / job_hash[:2] / job_hash


@dataclass(frozen=True)
class JobPaths:
    """Every file of one job directory."""

    root: Path

    @classmethod
    def of(cls, root: str | Path) -> JobPaths:
        return cls(Path(root))

    @property
    def job_file(self) -> Path:
        return self.root / JOB_FILE

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT_FILE

    def rank_rng(self, rank: int) -> Path:
        return self.root / RNG_DIR / f"rank{rank}.pt"

    @property
    def epoch_metrics(self) -> Path:
        return self.root / EPOCH_METRICS_FILE

    @property
    def final_metrics(self) -> Path:
        return self.root / FINAL_METRICS_FILE

    @property
    def final_weights(self) -> Path:
        return self.root / FINAL_WEIGHTS_FILE

    @property
    def probe_checkpoint(self) -> Path:
        return self.root / PROBE_CHECKPOINT_FILE

    @property
    def mask(self) -> Path:
        return self.root / MASK_FILE

    @property
    def rewind(self) -> Path:
        return self.root / REWIND_FILE

    @property
    def sparsity(self) -> Path:
        return self.root / SPARSITY_FILE

    @property
    def worker_settings(self) -> Path:
        return self.root / WORKER_SETTINGS_FILE

    @property
    def logs(self) -> Path:
        return self.root / LOG_DIR

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR
