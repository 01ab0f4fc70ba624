"""Subset tables -> manifests: validate a ``[subsets.NAME]`` table, resolve it against a dataset."""

from __future__ import annotations

from typing import Any

import numpy as np

from subsets.base import COMMON_KEYS, Manifest, SubsetError, stratified_fraction
from subsets.meta import DatasetMeta
from subsets.registry import get_strategy, identity_params


def validate_table(table: dict[str, Any]) -> dict[str, Any]:
    """Validate a ``[subsets.NAME]`` table without any dataset; return its canonical form."""
    if not isinstance(table, dict):
        raise SubsetError("strategy", "a table with a 'strategy' key")
    strategy = get_strategy(table.get("strategy"))
    own = {k: v for k, v in table.items() if k not in COMMON_KEYS}
    canonical: dict[str, Any] = {"strategy": strategy.name, **strategy.validate(own)}
    fraction = table.get("fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise SubsetError("fraction", "a number in (0, 1]")
    if fraction != 1.0:
        canonical["fraction"] = float(fraction)
        seed = table.get("fraction_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SubsetError("fraction_seed", "a non-negative integer")
        canonical["fraction_seed"] = seed
    return canonical


def resolve(name: str, table: dict[str, Any], meta: DatasetMeta) -> Manifest:
    """Resolve a subset table against a dataset into its :class:`Manifest`."""
    canonical = validate_table(table)
    strategy = get_strategy(canonical["strategy"])
    own = {k: v for k, v in canonical.items() if k not in COMMON_KEYS}
    chosen = sorted(set(strategy.select_classes(own, meta)))
    if not chosen:
        raise SubsetError("strategy", f"a subset with at least one class ('{name}' selects none)")
    indices = {}
    for split, labels in meta.labels.items():
        idx = np.flatnonzero(np.isin(labels, chosen)).astype(np.int64)
        if split == "train" and "fraction" in canonical:
            idx = stratified_fraction(labels, idx, canonical["fraction"], canonical["fraction_seed"])
        indices[split] = idx
    params = {k: v for k, v in canonical.items() if k != "strategy"}
    return Manifest(
        name=name,
        strategy=strategy.name,
        params=params,
        classes=[meta.classes[i] for i in chosen],
        indices=indices,
        dataset_fingerprint=meta.fingerprint,
        identity=identity_params(strategy.name, params),
    )
