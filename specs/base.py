"""Typed-spec helpers: build frozen dataclasses from TOML/JSON tables with precise errors, and hash them.

Every spec field is a plain scalar (int, float, str, bool), optionally ``| None``, or a
``dict``/``list`` of scalars. Allowed string values are declared with ``field(metadata={"choices": ...})``
and numeric bounds with ``metadata={"min": ..., "max": ...}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from functools import cached_property
from typing import Any, TypeVar

T = TypeVar("T")


class SpecError(ValueError):
    """A spec value is invalid. ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, expected: str, file: str | None = None) -> None:
        self.key, self.expected, self.file = key, expected, file
        super().__init__(self.line())

    def line(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}{self.key}: expected {self.expected}"

    def in_file(self, file: str) -> "SpecError":
        return SpecError(self.key, self.expected, file)

    def under(self, prefix: str) -> "SpecError":
        return SpecError(f"{prefix}.{self.key}" if prefix else self.key, self.expected, self.file)


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
        value = float(value)
    elif tp is str and not isinstance(value, str):
        raise SpecError(key, "a string")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise SpecError(key, "one of " + ", ".join(repr(c) for c in choices))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise SpecError(key, f"{_type_name(tp)} >= {lo}")
    if hi is not None and value > hi:
        raise SpecError(key, f"{_type_name(tp)} <= {hi}")
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
    return cls(**kwargs)


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
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
