"""Typed-spec helpers: build frozen dataclasses from TOML/JSON tables with precise errors, and hash them.

Every spec field is a plain scalar (int, float, str, bool), optionally ``| None``, or a
``dict``/``list`` of scalars. Allowed string values are declared with ``field(metadata={"choices": ...})``
and numeric bounds with ``metadata={"min": ..., "max": ...}``.

Limits every value obeys (hostile or mistyped input ends in one :class:`SpecError` line): floats are
finite; integers fit the database's 32-bit ``INTEGER`` columns (:data:`INT_MIN`..:data:`INT_MAX`) unless a
field sets tighter bounds; strings hold no control characters. Names that reach file names and database
columns (grid, subset, method and lottery table names) match :data:`NAME_PATTERN` (:func:`check_name`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Sequence
from functools import cached_property
from json.encoder import encode_basestring_ascii
from typing import Any, TypeVar

T = TypeVar("T")
INT_MAX = 2**31 - 1  # the database stores integers (seeds, counts) in 32-bit INTEGER columns
INT_MIN = -(2**31)
NAME_MAX = 100  # grid / subset / method / lottery table names (labels built from them: LABEL_MAX)
LABEL_MAX = 200  # String(200) columns of db/models.py (grid name, subset and config labels)
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_NAME_RE = re.compile(NAME_PATTERN)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# one encoder each (``json.dumps`` with options builds a new encoder per call)
_SPACED = json.JSONEncoder(sort_keys=True)  # json.dumps(obj, sort_keys=True): job.json's text
_COMPACT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)  # what identities hash


class SpecError(ValueError):
    """A spec value is invalid. ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, expected: str, file: str | None = None) -> None:
        # one line whatever the input held: control characters (a newline in a TOML key) are escaped
        self.key, self.expected, self.file = one_line(str(key)), one_line(str(expected)), file
        super().__init__(self.line())

    def line(self) -> str:
        where = f"{one_line(self.file)}: " if self.file else ""
        return f"{where}{self.key}: expected {self.expected}"

    def in_file(self, file: str) -> "SpecError":
        return SpecError(self.key, self.expected, file)

    def under(self, prefix: str) -> "SpecError":
        return SpecError(f"{prefix}.{self.key}" if prefix else self.key, self.expected, self.file)


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``), so that a message stays one line."""
    return _CONTROL_RE.sub(lambda m: ascii(m.group())[1:-1], text)


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def coerce(value: Any, tp: Any, key: str, meta: typing.Mapping[str, Any] | None = None) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float where needed)."""
    meta = meta or {}
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], key, meta)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SpecError(key, "a table")
        return dict(value)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise SpecError(key, "a list")
        return list(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(key, "true or false")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(key, "an integer")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(key, "a number")
        value = finite(value, key)
    elif tp is str:
        if not isinstance(value, str):
            raise SpecError(key, "a string")
        check_text(value, key)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise SpecError(key, "one of " + ", ".join(repr(c) for c in choices))
    lo, hi = meta.get("min"), meta.get("max")
    if tp is int:  # what the database stores
        lo = INT_MIN if lo is None else lo
        hi = INT_MAX if hi is None else hi
    if lo is not None and value < lo:
        raise SpecError(key, f"{_type_name(tp)} >= {lo}")
    if hi is not None and value > hi:
        raise SpecError(key, f"{_type_name(tp)} <= {hi}")
    return value


def finite(value: Any, key: str) -> float:
    """``value`` as a finite float, or :class:`SpecError` (NaN, infinities and ints beyond a float)."""
    try:
        out = float(value)
    except (OverflowError, TypeError, ValueError):
        raise SpecError(key, "a finite number") from None
    if not math.isfinite(out):
        raise SpecError(key, f"a finite number (got {value})")
    return out


def check_text(value: str, key: str) -> str:
    """``value`` unless it holds a control character (a newline would end a shell or ``#SBATCH`` line)."""
    bad = _CONTROL_RE.search(value)
    if bad:
        raise SpecError(key, f"text without control characters (found {bad.group()!r})")
    return value


def check_name(value: Any, key: str, max_len: int = NAME_MAX) -> str:
    """A name that may become part of a file name or a database label: ``NAME_PATTERN``, ``max_len`` long."""
    if not isinstance(value, str) or len(value) > max_len or not _NAME_RE.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise SpecError(key, f"a name of 1-{max_len} letters, digits, '_', '.', '-', starting with a letter or "
                             f"digit (got {shown})")
    return value


class Plain:
    """Mixin of frozen spec dataclasses: their dict forms are computed once per instance (a grid's jobs
    share a few config objects, and launching a large grid reads them for every job)."""

    @cached_property
    def plain(self) -> dict[str, Any]:
        """The fields as plain dicts/lists (shared: do not mutate)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @cached_property
    def canonical(self) -> dict[str, Any]:
        """:func:`non_defaults` of the instance (shared: do not mutate)."""
        return non_defaults(self)

    @cached_property
    def plain_json(self) -> str:
        """:attr:`plain` as JSON text (sorted keys, as ``json.dumps(..., sort_keys=True)``)."""
        return _SPACED.encode(self.plain)

    @cached_property
    def canonical_json(self) -> str:
        """:attr:`canonical` as :func:`stable_hash` encodes it (sorted keys, no whitespace)."""
        return _COMPACT.encode(self.canonical)


def from_table(cls: type[T], table: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``table``; unknown keys and bad values raise :class:`SpecError`."""
    if not isinstance(table, dict):
        raise SpecError(prefix or cls.__name__, "a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    dotted = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: k)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise SpecError(dotted(unknown[0]), "one of " + ", ".join(sorted(fields)))
    kwargs = {}
    for name, value in table.items():
        kwargs[name] = coerce(value, hints[name], dotted(name), fields[name].metadata)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SpecError(dotted(missing[0]), "a value (required)")
    try:
        return cls(**kwargs)
    except SpecError as exc:  # a rule between fields (``__post_init__``) names its key relative to the table
        raise exc.under(prefix) from None


def non_defaults(obj: Any) -> dict[str, Any]:
    """Fields of dataclass ``obj`` whose value differs from the default (the canonical, hashable part)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            out[f.name] = non_defaults(value) if dataclasses.is_dataclass(value) else value
    return out


def stable_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON form (sorted keys, no whitespace) of ``obj``."""
    return text_hash(_COMPACT.encode(obj), length)


def text_hash(text: str, length: int = 16) -> str:
    """SHA-256 of ``text`` (a canonical JSON form, e.g. :func:`sorted_json`'s compact one), hex, ``length`` long."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def sorted_json(values: dict[str, Any], encoded: dict[str, str], *, compact: bool = False) -> str:
    """The JSON text of ``{**values, **encoded}`` with sorted keys, where ``encoded``'s values are JSON
    text already: the parts many documents share (a grid's configurations) are encoded once, not once per
    job. Plain: ``json.dumps(doc, sort_keys=True)``'s text; ``compact``: :func:`stable_hash`'s. String keys,
    none in both."""
    item_sep, key_sep = (",", ":") if compact else (", ", ": ")
    parts = []
    for key in sorted([*values, *encoded]):
        text = encoded.get(key)
        if text is None:
            text = value_json(values[key], compact=compact)
        parts.append(f"{encode_basestring_ascii(key)}{key_sep}{text}")
    return "{" + item_sep.join(parts) + "}"


def json_template(keys: Sequence[str]) -> str:
    """A ``%``-template of a JSON object with ``keys`` (strings, sorted by the caller) and one ``%s`` per
    value: ``template % tuple(value texts)`` is ``json.dumps(doc, sort_keys=True)``'s text, for documents
    of one fixed shape (``job.json``) without a dict or an encoder call per document."""
    return "{" + ", ".join(f"{encode_basestring_ascii(k).replace('%', '%%')}: %s" for k in keys) + "}"


def value_json(value: Any, *, compact: bool = False) -> str:
    """``value``'s JSON text as ``json.dumps(..., sort_keys=True)`` writes it (``compact``: as
    :func:`stable_hash` does); strings, integers, ``None`` and empty containers without an encoder call."""
    return _scalar_json(value) or (_COMPACT if compact else _SPACED).encode(value)


def _scalar_json(value: Any) -> str:
    """The JSON of a string, an integer (not a bool), ``None`` or an empty table or list, as both encoders
    write it; ``""`` for anything else."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if (kind is dict or kind is list or kind is tuple) and not value:
        return "{}" if kind is dict else "[]"
    return ""
