"""Which SLURM cluster a grid's SLURM commands go to.

A profile's ``slurm_conf`` (a path to a ``slurm.conf``) selects a cluster other than the machine's default
one, the standard SLURM way: every SLURM command the backend runs (its own and submitit's ``sbatch``) sees
``SLURM_CONF``, and the jobs inherit it. The path is remembered in the database (``dlth_meta``) under the
grid's SLURM job name and under each array id, so that ``status``/``cancel``/``resume`` (and the breaker's
holds) of a later process, which read no profile, reach the same cluster. Without ``slurm_conf`` nothing
changes: ``SLURM_CONF`` from the environment, else SLURM's default.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

_GRID_KEY = "slurm_conf/name/{}"
_ARRAY_KEY = "slurm_conf/array/{}"


def remember(store: Any, name: str, slurm_conf: str, array_ids: Sequence[str] = ()) -> None:
    """Record that the grid whose SLURM job name is ``name`` (and the arrays ``array_ids``) run under
    ``slurm_conf`` ("" = the default cluster: written only over another recorded cluster)."""
    if (store.get_meta(_GRID_KEY.format(name)) or "") != slurm_conf:
        store.set_meta(_GRID_KEY.format(name), slurm_conf)
    if not slurm_conf:
        return
    for array_id in array_ids:
        store.set_meta(_ARRAY_KEY.format(array_id), slurm_conf)


def grid_conf(store: Any, name: str) -> str:
    """The ``slurm.conf`` recorded for the grid named ``name`` in SLURM ("" = the default cluster)."""
    return store.get_meta(_GRID_KEY.format(name)) or ""


def array_conf(store: Any, slurm_id: str) -> str:
    """The ``slurm.conf`` recorded for the array of ``slurm_id`` (``ARRAY_TASK``; "" = the default cluster)."""
    return store.get_meta(_ARRAY_KEY.format(slurm_id.split("_")[0])) or ""


def by_cluster(store: Any, slurm_ids: Sequence[str], default: str = "") -> dict[str, list[str]]:
    """``slurm_ids`` grouped by the ``slurm.conf`` recorded for their array (``default`` where none was)."""
    confs = {a: array_conf(store, a) or default for a in {i.split("_")[0] for i in slurm_ids}}
    out: dict[str, list[str]] = {}
    for slurm_id in slurm_ids:
        out.setdefault(confs[slurm_id.split("_")[0]], []).append(slurm_id)
    return out


@contextlib.contextmanager
def targeting(slurm_conf: str) -> Iterator[None]:
    """``SLURM_CONF=slurm_conf`` for every SLURM command run inside (no-op for "")."""
    if not slurm_conf:
        yield
        return
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = slurm_conf
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
