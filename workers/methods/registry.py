"""Method name -> implementation. Adding a method: one file in this package plus one line here
(and its hyperparameter dataclass in ``specs/methods.py``)."""

from __future__ import annotations

from workers.methods.base import Method
from workers.methods.simclr import SimCLR
from workers.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {
    Supervised.name: Supervised,
    SimCLR.name: SimCLR,
}


def method_class(name: str) -> type[Method]:
    """The implementation of method ``name`` (KeyError with the known names otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None
