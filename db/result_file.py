"""A job's result on disk: ``<job_dir>/final_metrics.json``, written by the worker before it tells the DB.

Format: ``{"job_hash": str, "metrics": {name: value}, "epoch_metrics": {epoch: {name: value}}}`` (epoch
keys are strings in JSON). Writing and reading the file lives here (no database);
:mod:`db.ingest` completes jobs from such files through the store, so a finished job never reruns because
a write failed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from specs.atomic import write_json_atomic
from specs.contract import FINAL_METRICS_FILE

log = logging.getLogger(__name__)
__all__ = ["FINAL_METRICS_FILE", "FinalResult", "ResultFileError", "read_final_metrics", "write_final_metrics"]


@dataclass(frozen=True)
class FinalResult:
    """The parsed content of a ``final_metrics.json``."""

    job_hash: str
    metrics: dict[str, float]
    epoch_metrics: dict[int, dict[str, float]] = field(default_factory=dict)


class ResultFileError(ValueError):
    """A ``final_metrics.json`` exists but cannot be used; the message is one line naming file and key."""


def write_final_metrics(
    job_dir: str | os.PathLike[str], job_hash: str, metrics: dict[str, float],
    epoch_metrics: dict[int, dict[str, float]] | None = None,
) -> Path:
    """Write ``final_metrics.json`` atomically (tmp file, fsync, rename); return its path."""
    path = Path(job_dir) / FINAL_METRICS_FILE
    doc = {
        "job_hash": job_hash,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "epoch_metrics": {str(e): {k: float(v) for k, v in vals.items()}
                          for e, vals in (epoch_metrics or {}).items()},
    }
    return write_json_atomic(path, doc, sort_keys=True, fsync=True)


def _values(obj: object, where: str) -> dict[str, float]:
    if not isinstance(obj, dict):
        raise ResultFileError(f"{where}: expected an object of metric name -> number")
    out: dict[str, float] = {}
    for name, value in obj.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ResultFileError(f"{where}.{name}: expected a number, got {value!r}")
        out[str(name)] = float(value)
    return out


def read_final_metrics(job_dir: str | os.PathLike[str]) -> FinalResult | None:
    """Parse ``<job_dir>/final_metrics.json``; ``None`` if absent, :class:`ResultFileError` if unusable."""
    path = Path(job_dir) / FINAL_METRICS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("job_hash"), str):
        raise ResultFileError(f"{path}: job_hash: expected a string")
    metrics = _values(doc.get("metrics"), f"{path}: metrics")
    epochs_doc = doc.get("epoch_metrics") or {}
    if not isinstance(epochs_doc, dict):
        raise ResultFileError(f"{path}: epoch_metrics: expected an object of epoch -> metrics")
    epoch_metrics: dict[int, dict[str, float]] = {}
    for epoch, vals in epochs_doc.items():
        try:
            e = int(epoch)
        except ValueError as exc:
            raise ResultFileError(f"{path}: epoch_metrics.{epoch}: expected an integer epoch") from exc
        epoch_metrics[e] = _values(vals, f"{path}: epoch_metrics.{epoch}")
    bad = [k for k, v in metrics.items() if math.isnan(v)]
    if bad:
        log.warning("%s: metrics %s are NaN", path, ", ".join(bad))
    return FinalResult(doc["job_hash"], metrics, epoch_metrics)
