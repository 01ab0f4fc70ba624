"""Backend name -> implementation (imported lazily: SLURM's needs submitit). The CLI's ``--cluster``
choices are :data:`BACKENDS`."""

from __future__ import annotations

import importlib

from orchestrator.backends.base import Backend

# name -> "module:class"
REGISTRY = {
    "local": "orchestrator.backends.local:LocalBackend",
    "slurm": "orchestrator.backends.slurm:SlurmBackend",
}
BACKENDS = tuple(REGISTRY)


def get_backend(name: str) -> Backend:
    try:
        module, cls = REGISTRY[name].split(":")
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls)()


def backends_of_grid(store, grid_name: str) -> set[str]:  # type: ignore[no-untyped-def]
    """Backends that hold (or held) some of the grid's jobs."""
    return store.grid_backends(grid_name)
