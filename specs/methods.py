"""Hyperparameters of each training method (torch-free, so the control plane can validate grids).

Adding a method: a dataclass here plus a line in ``METHOD_HPARAMS``, and its implementation in
``workers/methods/<name>.py`` with a line in ``workers/methods/registry.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specs.base import SpecError


@dataclass(frozen=True)
class SupervisedHparams:
    """Cross-entropy classification of the subset's classes."""

    label_smoothing: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})


@dataclass(frozen=True)
class SimCLRHparams:
    """SimCLR (Chen et al. 2020): NT-Xent over two augmented views."""

    temperature: float = field(default=0.2, metadata={"min": 1e-4})
    proj_hidden_dim: int = field(default=512, metadata={"min": 1})
    proj_dim: int = field(default=128, metadata={"min": 1})


METHOD_HPARAMS: dict[str, type] = {
    "supervised": SupervisedHparams,
    "simclr": SimCLRHparams,
}


def hparams_class(method: Any) -> type:
    """The hyperparameter dataclass of ``method``; :class:`SpecError` if unknown."""
    if not isinstance(method, str) or method not in METHOD_HPARAMS:
        raise SpecError("method", "one of " + ", ".join(sorted(METHOD_HPARAMS)))
    return METHOD_HPARAMS[method]
