"""Epoch checkpoints that survive a crash, and files the product saves with ``torch.save``.

Durability: a checkpoint is written to a temporary file, flushed (``fsync``), renamed over
``checkpoint.pt`` and its directory flushed; the checkpoint before it stays as ``checkpoint.prev.pt``
until then (and after, as the fallback). A torn or corrupted checkpoint is set aside
(``checkpoint.pt.torn-<time>``) with one warning line and the job resumes from the previous one, or
from scratch: a torn file never fails an attempt. A checkpoint that would run code
(:class:`workers.safe_load.UnsafeFileError`) fails the attempt with one line naming the file.

RNG: rank 0's states travel in the checkpoint; every other rank saves its own (``rng.rank<r>.pt``, the
epoch inside) before rank 0 writes the checkpoint that names that epoch, and restores its own on resume.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from specs.atomic import atomic_path
from specs.contract import CHECKPOINT_FILE, JobPaths, previous_of
from workers import rng_state
from workers.safe_load import UnreadableFileError, load_torch

log = logging.getLogger(__name__)
__all__ = ["CHECKPOINT_FILE", "load_checkpoint", "read_or_set_aside", "save_checkpoint", "save_rank_rng",
           "save_torch_atomic"]


def save_checkpoint(job_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (+ this rank's RNG states) to ``job_dir/checkpoint.pt``, durably (module docstring)."""
    return save_torch_atomic({**state, "rng": rng_state.capture()}, JobPaths.of(job_dir).checkpoint,
                             keep_previous=True)


def save_rank_rng(job_dir: Path, rank: int, epoch: int) -> Path | None:
    """On a rank > 0: write its RNG states at the end of ``epoch`` (rank 0's go into the checkpoint)."""
    if rank == 0:
        return None
    return save_torch_atomic({"epoch": epoch, "rank": rank, **rng_state.capture()},
                             JobPaths.of(job_dir).rank_rng(rank), keep_previous=True)


def save_torch_atomic(obj: Any, path: Path, *, keep_previous: bool = False) -> Path:
    """``torch.save(obj, path)`` through a temporary file, ``fsync`` and a rename (never a torn file);
    ``keep_previous``: the file it replaces stays as ``<stem>.prev<suffix>``."""
    with atomic_path(path, fsync=True) as tmp:
        torch.save(obj, tmp)
        if keep_previous and path.exists():
            os.replace(path, previous_of(path))
    return path


def load_checkpoint(job_dir: Path, rank: int = 0) -> dict[str, Any] | None:
    """The last readable checkpoint of the job, or ``None``; restores this rank's RNG states."""
    current = JobPaths.of(job_dir).checkpoint
    for path in (current, previous_of(current)):
        state = read_or_set_aside(path, keys=("epoch", "model"))
        if state is not None:
            break
    else:
        return None
    epoch = int(state["epoch"])
    if rank == 0:
        if state.get("rng"):
            rng_state.restore(state["rng"])
    else:
        _restore_rank_rng(job_dir, rank, epoch)
    log.info("resuming from %s (epoch %d done)", path, epoch)
    return state


def read_or_set_aside(path: Path, keys: tuple[str, ...], map_location: str | torch.device = "cpu",
                      ) -> dict[str, Any] | None:
    """The checkpoint dict in ``path`` (holding ``keys``); ``None`` if there is none, or if it is torn or
    not such a dict: then it is set aside with one warning line. A file that would run code raises."""
    try:
        state = load_torch(path, map_location, legacy_numpy=True)
    except FileNotFoundError:
        return None
    except UnreadableFileError as exc:
        _set_aside(path, str(exc))
        return None
    if not isinstance(state, dict) or any(k not in state for k in keys):
        _set_aside(path, f"{path}: not a checkpoint (expected a dict with {', '.join(keys)})")
        return None
    return state


def _set_aside(path: Path, why: str) -> None:
    aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another rank of the job set it aside first (and said so)
        return
    log.warning("%s; set aside as %s, starting from the previous checkpoint (or from scratch)", why, aside.name)


def _restore_rank_rng(job_dir: Path, rank: int, epoch: int) -> None:
    """Restore rank ``rank``'s own RNG states saved at the end of ``epoch`` (this file or its previous)."""
    current = JobPaths.of(job_dir).rank_rng(rank)
    for path in (current, previous_of(current)):
        try:
            saved = load_torch(path)
        except (FileNotFoundError, UnreadableFileError):
            continue
        if isinstance(saved, dict) and saved.get("epoch") == epoch:
            rng_state.restore(saved)
            return
    log.warning("rank %d: no RNG state saved for epoch %d (%s): keeping the seeded state", rank, epoch, current.name)
