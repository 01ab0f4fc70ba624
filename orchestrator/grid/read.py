"""Reading a grid file: TOML text -> plain tables (the first stage; nothing is validated but the file itself).

Limits (docs/grid.md, "Limits"): UTF-8 TOML of at most ``MAX_FILE_BYTES``, tables and lists nested at most
``MAX_DEPTH`` deep (checked without recursion, so a hostile file cannot exhaust the stack). Every problem
is a one-line :class:`specs.base.SpecError` naming the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from specs.base import SpecError

MAX_FILE_BYTES = 16 << 20  # a grid file larger than this is not a grid file
MAX_DEPTH = 16  # tables/lists nested deeper than this are refused (before anything recurses over them)


def read_toml(path: Path) -> dict[str, Any]:
    """The tables of a TOML file: UTF-8, at most ``MAX_FILE_BYTES``, nested at most ``MAX_DEPTH`` deep."""
    file = str(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SpecError("file", f"a grid file of at most {MAX_FILE_BYTES >> 20} MiB", file)
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SpecError("file", "an existing grid file", file) from None
    except IsADirectoryError:
        raise SpecError("file", "a grid file, not a directory", file) from None
    except OSError as exc:
        raise SpecError("file", f"a readable grid file ({exc.strerror})", file) from None
    except UnicodeDecodeError as exc:
        raise SpecError("file", f"UTF-8 text (byte {exc.start} is not)", file) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError("toml", f"valid TOML ({str(exc).splitlines()[0]})", file) from None
    except RecursionError:
        raise SpecError("toml", f"tables and lists nested at most {MAX_DEPTH} deep", file) from None
    if _depth(raw) > MAX_DEPTH:
        raise SpecError("toml", f"tables and lists nested at most {MAX_DEPTH} deep", file)
    return raw


def _depth(value: Any) -> int:
    """How deeply tables and lists nest in ``value`` (iterative: a hostile file must not exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            stack.extend((c, depth + 1) for c in children)
    return deepest
