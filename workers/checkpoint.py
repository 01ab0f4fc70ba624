"""Epoch checkpoints, written atomically (tmp + rename) so a kill never leaves a torn file."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specs.atomic import atomic_path
from specs.contract import CHECKPOINT_FILE

log = logging.getLogger(__name__)
__all__ = ["CHECKPOINT_FILE", "load_checkpoint", "save_checkpoint"]


def save_checkpoint(job_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (+ RNG states) to ``job_dir/checkpoint.pt`` atomically."""
    state = {**state, "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                              "python": random.getstate()}}
    return save_torch_atomic(state, job_dir / CHECKPOINT_FILE)


def save_torch_atomic(obj: Any, path: Path) -> Path:
    """``torch.save(obj, path)`` through a temporary file and a rename (never a torn file)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def load_checkpoint(job_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint of the job, or ``None``; restores the RNG states it saved."""
    path = job_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    rng = state.get("rng")
    if rng:
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    log.info("resuming from %s (epoch %d done)", path, state["epoch"])
    return state
