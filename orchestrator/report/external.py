"""External results: a CSV table of results measured elsewhere (e.g. published full-ImageNet numbers).

Columns ``config,subset,metric,value[,seed]`` (any order; extra columns such as a citation are ignored).
Row numbers in errors are the file's line numbers (the header is row 1). Every problem raises
:class:`ExternalTableError`, one line naming the file, the row and the column. External rows become
:class:`JobResult` rows of subsets named ``external:<subset>``, marked ``external``, and take part in the
statistics like a grid's own jobs; a configuration is matched to a grid's by its label.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from db import JobState
from orchestrator.report.ranking import JobResult
from specs.base import one_line

REQUIRED = ("config", "subset", "metric", "value")
PREFIX = "external:"
MAX_ABS_VALUE = 1e12  # larger values are not metrics: they break the statistics and the plots
MAX_LABEL = 200  # the database's String(200) labels
MAX_BYTES = 64 << 20
SEED_MAX = 2**31 - 1


class ExternalTableError(ValueError):
    """A bad external table: ``file: row N, column C: expected ...``."""

    def __init__(self, file: str, row: int | None, column: str | None, expected: str) -> None:
        where = ", ".join(p for p in (f"row {row}" if row else "", f"column {column}" if column else "") if p)
        super().__init__(one_line(f"{file}: {where + ': ' if where else ''}expected {expected}"))


@dataclass(frozen=True)
class ExternalRow:
    row: int  # line number in the file
    config: str
    subset: str
    metric: str
    value: float
    seed: int


def read_external(path: str | Path) -> list[ExternalRow]:
    """Parse and check an external results table."""
    path = Path(path)
    file = str(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ExternalTableError(file, None, None, f"a CSV file of at most {MAX_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8-sig")
    except (FileNotFoundError, IsADirectoryError):
        raise ExternalTableError(file, None, None, "an existing CSV file") from None
    except UnicodeDecodeError:
        raise ExternalTableError(file, None, None, "a UTF-8 text file") from None
    except OSError as exc:
        raise ExternalTableError(file, None, None, f"a readable CSV file ({exc.strerror})") from None
    if "\x00" in text:
        raise ExternalTableError(file, None, None, "a text file (it holds NUL bytes)")
    try:
        return _rows(csv.reader(text.splitlines()), file)
    except csv.Error as exc:
        raise ExternalTableError(file, None, None, f"valid CSV ({exc})") from None


def _rows(reader: Iterator[list[str]], file: str) -> list[ExternalRow]:
    header = [h.strip().lower() for h in next(reader, [])]
    for col in REQUIRED:
        if col not in header:
            raise ExternalTableError(file, 1, col, f"a column named {col!r} (header has: "
                                     f"{', '.join(h for h in header if h) or 'nothing'})")
    idx = {h: n for n, h in enumerate(header)}
    out: list[ExternalRow] = []
    seen: dict[tuple[str, str, str, int], int] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue

        def cell(col: str, line: int = line, cells: list[str] = cells) -> str:
            n = idx[col]
            return cells[n].strip() if n < len(cells) else ""

        for col in ("config", "subset", "metric"):
            label = cell(col)
            if not label or len(label) > MAX_LABEL or any(ord(c) < 32 or ord(c) == 127 for c in label):
                raise ExternalTableError(file, line, col, f"a label of 1-{MAX_LABEL} characters without control "
                                         "characters")
        value = _number(cell("value"), file, line)
        seed = _seed(cell("seed"), file, line) if "seed" in idx else 0
        key = (cell("config"), cell("subset"), cell("metric"), seed)
        if key in seen:
            raise ExternalTableError(file, line, "config", f"one row per config/subset/metric/seed (duplicate of row "
                                     f"{seen[key]}: {key[0]}, {key[1]}, {key[2]}, seed {seed})")
        seen[key] = line
        out.append(ExternalRow(line, *key[:3], value, seed))
    if not out:
        raise ExternalTableError(file, 2, None, "at least one row of results")
    return out


def _number(text: str, file: str, line: int) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ExternalTableError(file, line, "value", f"a number, got {text[:40]!r}") from None
    if not math.isfinite(v) or abs(v) > MAX_ABS_VALUE:
        raise ExternalTableError(file, line, "value", f"a finite number of magnitude at most {MAX_ABS_VALUE:g}, "
                                 f"got {text[:40]!r}")
    return v


def _seed(text: str, file: str, line: int) -> int:
    if not text:
        return 0
    try:
        seed = int(text)
    except ValueError:
        raise ExternalTableError(file, line, "seed", f"an integer, got {text[:40]!r}") from None
    if not 0 <= seed <= SEED_MAX:
        raise ExternalTableError(file, line, "seed", f"an integer from 0 to {SEED_MAX}, got {text[:40]!r}")
    return seed


def metrics_of(rows: Sequence[ExternalRow]) -> list[str]:
    """The metrics the table has, in order of first appearance."""
    return list(dict.fromkeys(r.metric for r in rows))


def external_results(rows: Sequence[ExternalRow], metric: str, file: str | Path,
                     keys: Mapping[str, str] | None = None) -> list[JobResult]:
    """The table's rows of ``metric`` as completed, external :class:`JobResult` rows.

    ``keys``: configuration label -> the grid's configuration key (a label matching none is an error);
    None (a table on its own): the label is the key.
    """
    chosen = [r for r in rows if r.metric == metric]
    if not chosen:
        raise ExternalTableError(str(file), None, "metric", f"rows of the report's metric {metric!r} (the table has: "
                                 f"{', '.join(metrics_of(rows))})")
    out = []
    for r in chosen:
        if keys is not None and r.config not in keys:
            raise ExternalTableError(str(file), r.row, "config", f"a configuration label of the grid (one of "
                                     f"{', '.join(sorted(keys))}), got {r.config!r}")
        key = keys[r.config] if keys is not None else r.config
        out.append(JobResult(PREFIX + r.subset, r.config, key, r.seed, JobState.COMPLETED, {metric: r.value},
                             external=True))
    return out
