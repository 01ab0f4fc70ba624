"""Per-class accuracy files: ``wnid,accuracy`` CSV or ``{wnid: accuracy}`` JSON.

CSV: one ``wnid,accuracy`` line per class, an optional ``wnid,accuracy`` header, ``#`` comments and
blank lines ignored. JSON: one object mapping wnid to accuracy. A file whose name ends in ``.json``
(or whose first character is ``{``) is read as JSON, anything else as CSV. Accuracies are fractions
in [0, 1]; every wnid appears once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from specs.atomic import write_text_atomic
from specs.base import stable_hash
from subsets.base import SubsetError

KEY = "accuracy_file"


class AccuracyFileError(SubsetError):
    """An accuracy file is missing or malformed (key ``accuracy_file``; the message names the file)."""

    def __init__(self, path: str | Path, expected: str) -> None:
        super().__init__(KEY, f"{expected} ({path})")
        self.path = str(path)


def _check(path: Path, where: str, wnid: Any, acc: Any, out: dict[str, float]) -> None:
    if not isinstance(wnid, str) or not wnid.strip():
        raise AccuracyFileError(path, f"a class id (wnid) at {where}")
    wnid = wnid.strip()
    if isinstance(acc, str):
        try:
            acc = float(acc)
        except ValueError:
            raise AccuracyFileError(path, f"a number as the accuracy of {wnid} at {where}") from None
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc) or not 0 <= acc <= 1:
        raise AccuracyFileError(path, f"an accuracy in [0, 1] for {wnid} at {where} (got {acc!r})")
    if wnid in out:
        raise AccuracyFileError(path, f"each wnid once ({wnid} repeats at {where})")
    out[wnid] = float(acc)


def read_accuracy_file(path: str | Path) -> dict[str, float]:
    """Read a per-class accuracy file into ``{wnid: accuracy}``; :class:`AccuracyFileError` if bad."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AccuracyFileError(path, "an existing per-class accuracy file (CSV wnid,accuracy or JSON)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AccuracyFileError(path, f"a readable text file ({exc.__class__.__name__})") from None
    out: dict[str, float] = {}
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AccuracyFileError(path, f"valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(raw, dict):
            raise AccuracyFileError(path, "a JSON object {wnid: accuracy}")
        for wnid, acc in raw.items():
            _check(path, f"key {wnid!r}", wnid, acc, out)
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 2:
                raise AccuracyFileError(path, f"two comma-separated fields 'wnid,accuracy' on line {lineno}")
            if not out and parts[0].lower() == "wnid" and parts[1].lower() == "accuracy":
                continue
            _check(path, f"line {lineno}", parts[0], parts[1], out)
    if not out:
        raise AccuracyFileError(path, "at least one 'wnid,accuracy' entry")
    return out


def accuracy_sha(acc: dict[str, float]) -> str:
    """Hash of the parsed content (independent of formatting, order and comments)."""
    return stable_hash(sorted(acc.items()))


def write_accuracy_file(path: str | Path, acc: dict[str, float]) -> Path:
    """Write ``{wnid: accuracy}`` atomically (tmp + rename): JSON if ``path`` ends in .json, else CSV."""
    path = Path(path)
    checked: dict[str, float] = {}
    for wnid, value in acc.items():
        _check(path, "input", wnid, value, checked)
    rows = sorted(checked.items())
    if path.suffix.lower() == ".json":
        text = "{\n" + ",\n".join(f" {json.dumps(w)}: {a!r}" for w, a in rows) + "\n}\n"
    else:
        text = "wnid,accuracy\n" + "".join(f"{w},{a!r}\n" for w, a in rows)
    return write_text_atomic(path, text)
