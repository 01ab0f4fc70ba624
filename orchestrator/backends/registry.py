"""Backend name -> implementation (imported lazily: SLURM's needs submitit)."""

from __future__ import annotations

from orchestrator.backends.base import Backend

BACKENDS = ("local", "slurm")


def get_backend(name: str) -> Backend:
    if name == "local":
        from orchestrator.backends.local import LocalBackend

        return LocalBackend()
    if name == "slurm":
        from orchestrator.backends.slurm import SlurmBackend

        return SlurmBackend()
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


def backends_of_grid(store, grid_name: str) -> set[str]:  # type: ignore[no-untyped-def]
    """Backends that hold (or held) some of the grid's jobs."""
    return {j.backend for j in store.jobs(grid_name) if j.backend}
