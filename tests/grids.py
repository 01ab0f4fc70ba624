"""Tiny grid files for the tests: the header they share (a test_resnet on 32 px images, one CPU and one
loader worker per job) written from keyword overrides, and the tables a test adds as TOML text."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

FULL = '[subsets.full]\nstrategy = "full"\n'
EVEN5 = '[subsets.even5]\nstrategy = "uniform"\nk = 5\n'


def _block(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def tiny_grid(name: str, root: str | Path, *, seeds: str | Iterable[int] = (0,), failure_budget: int | None = None,
              epochs: int = 1, batch_size: int = 64, lr: float | None = None, knn_k: int | None = None,
              resources: str = "", tables: str = "", subsets: str = FULL, methods: str = "") -> str:
    """A grid's TOML: ``name``, ``seeds`` (a list or its TOML text), ``failure_budget`` (omitted: the default),
    the dataset at ``root``, ``[train]`` (``lr`` omitted: the method's default), ``[eval] knn_k`` if given,
    ``[resources]`` plus the ``resources`` lines; then ``tables`` (e.g. ``[report]``, ``[cluster]``),
    ``subsets`` (default: the full dataset) and ``methods``, each TOML text as is."""
    seed_list = seeds if isinstance(seeds, str) else str(list(seeds))
    lines = [f'name = "{name}"', f"seeds = {seed_list}"]
    if failure_budget is not None:
        lines.append(f"failure_budget = {failure_budget}")
    lines += ["[dataset]", f'root = "{root}"',
              "[train]", 'backbone = "test_resnet"', f"epochs = {epochs}", f"batch_size = {batch_size}"]
    if lr is not None:
        lines.append(f"lr = {lr}")
    lines.append("image_size = 32")
    if knn_k is not None:
        lines += ["[eval]", f"knn_k = {knn_k}"]
    lines += ["[resources]", "cpus_per_task = 1", "loader_workers = 1"]
    return "\n".join(lines) + "\n" + "".join(_block(t) for t in (resources, tables, subsets, methods))
