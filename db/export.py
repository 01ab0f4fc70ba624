"""Export a grid's jobs, attempts and metrics to CSV and JSON files that pandas reads as they are.

- ``jobs.{csv,json}``: one row per job: its labels and state, its spec flattened to ``spec.<key>``
  columns, and its final metrics as columns (a metric named like a job column gets a ``metric.`` prefix).
- ``attempts.{csv,json}``: one row per attempt (long form), with ``duration_s``.
- ``metrics.{csv,json}``: one row per (job, epoch, metric) (long form); epoch -1 holds final metrics.
- ``grid.json``: the grid's name, spec hash, source path and spec.

JSON files are lists of flat records (``pandas.read_json(path)``); missing values and NaN are ``null``
in JSON and empty in CSV. Every file is written atomically (tmp + rename).

CSV injection (OWASP): a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
(a job name, an error message, a spec string such as ``=HYPERLINK(...)``) gets a leading ``'`` so that a
spreadsheet shows it as text instead of running it as a formula. Numbers are never escaped: a negative
metric stays a number. JSON files hold the values as they are.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from db.store import Store
from specs.atomic import write_text_atomic

FORMATS = ("csv", "json")
JOB_FIELDS = ("job_hash", "subset_name", "config_name", "config_key", "method", "seed", "state",
              "attempt_count", "failure_count", "backend", "backend_id", "last_error", "heartbeat_at",
              "ingested_from_disk", "job_dir")
ATTEMPT_FIELDS = ("job_hash", "number", "state", "backend", "backend_id", "host", "pid", "started_at",
                  "ended_at", "duration_s", "exit_code", "exit_reason", "log_path")
METRIC_FIELDS = ("job_hash", "subset_name", "config_name", "seed", "epoch", "name", "value", "attempt_id")


class ExportError(ValueError):
    """The export cannot be made (unknown grid, bad format); the message is one line."""


def parse_formats(text: str) -> tuple[str, ...]:
    """``"csv,json"`` -> ``("csv", "json")``; raise :class:`ExportError` on an unknown format."""
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ExportError(f"--format: expected a comma-separated list of {', '.join(FORMATS)}, got {text!r}")
    return formats


def flatten(obj: Any, prefix: str) -> dict[str, Any]:
    """Nested dicts -> ``{"prefix.a.b": scalar}``; lists are kept as JSON text."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k in sorted(obj):
            out.update(flatten(obj[k], f"{prefix}.{k}"))
        return out
    if isinstance(obj, list):
        return {prefix: json.dumps(obj, sort_keys=True)}
    return {prefix: obj}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def grid_tables(store: Store, grid_name: str) -> dict[str, list[dict[str, Any]]]:
    """``{"jobs": [...], "attempts": [...], "metrics": [...]}`` rows of a grid (four queries)."""
    jobs = store.jobs(grid_name)
    finals = store.final_metrics(grid_name)
    by_hash = {j.job_hash: j for j in jobs}
    metric_names = sorted({n for vals in finals.values() for n in vals})
    job_rows = []
    for j in jobs:
        row: dict[str, Any] = {f: getattr(j, f) for f in JOB_FIELDS}
        try:
            row.update(flatten(json.loads(j.spec_json), "spec"))
        except json.JSONDecodeError:
            row["spec"] = j.spec_json
        for name in metric_names:
            row[f"metric.{name}" if name in row else name] = finals.get(j.job_hash, {}).get(name)
        job_rows.append(row)
    attempt_rows = []
    for a in store.grid_attempts(grid_name):
        duration = (a.ended_at - a.started_at).total_seconds() if a.ended_at else None
        attempt_rows.append({**{f: getattr(a, f, None) for f in ATTEMPT_FIELDS}, "duration_s": duration})
    metric_rows = []
    for m in store.grid_metrics(grid_name):
        j = by_hash[m.job_hash]
        metric_rows.append({"job_hash": m.job_hash, "subset_name": j.subset_name, "config_name": j.config_name,
                            "seed": j.seed, "epoch": m.epoch, "name": m.name, "value": m.value,
                            "attempt_id": m.attempt_id})
    return {"jobs": job_rows, "attempts": attempt_rows, "metrics": metric_rows}


def _columns(rows: list[dict[str, Any]], base: Sequence[str]) -> list[str]:
    cols = list(base)
    seen = set(cols)
    for row in rows:
        for k in row:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols


def _csv_text(rows: list[dict[str, Any]], cols: list[str]) -> str:
    buf = io.StringIO()
    # RFC 4180 line ends: the writer then quotes a cell holding a lone \r as well as one holding \n
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: csv_cell(row.get(c)) for c in cols})
    return buf.getvalue()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell: empty for missing, numbers as they are, formula-like text quoted with ``'``."""
    plain = _plain(value)
    if plain is None:
        return ""
    if isinstance(plain, str) and plain.startswith(FORMULA_STARTS):
        return "'" + plain
    return plain


def export_grid(
    store: Store, grid_name: str, out_dir: str | os.PathLike[str], formats: Sequence[str] = FORMATS,
) -> dict[str, int]:
    """Write the grid's tables to ``out_dir`` in ``formats``; return ``{table: rows}``."""
    grid = store.get_grid(grid_name)
    if grid is None:
        known = ", ".join(g.name for g in store.list_grids()) or "none"
        raise ExportError(f"grid {grid_name!r}: not in the database (known grids: {known})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = grid_tables(store, grid_name)
    bases = {"jobs": JOB_FIELDS, "attempts": ATTEMPT_FIELDS, "metrics": METRIC_FIELDS}
    for name, rows in tables.items():
        cols = _columns(rows, bases[name])
        if "csv" in formats:
            write_text_atomic(out / f"{name}.csv", _csv_text(rows, cols))
        if "json" in formats:
            records = [{c: _plain(r.get(c)) for c in cols} for r in rows]
            write_text_atomic(out / f"{name}.json", json.dumps(records, indent=1, allow_nan=False) + "\n")
    try:
        spec = json.loads(grid.spec_json)
    except json.JSONDecodeError:
        spec = grid.spec_json
    write_text_atomic(out / "grid.json", json.dumps({"name": grid.name, "spec_hash": grid.spec_hash,
                                                 "source_path": grid.source_path, "spec": spec}, indent=1) + "\n")
    return {name: len(rows) for name, rows in tables.items()}
