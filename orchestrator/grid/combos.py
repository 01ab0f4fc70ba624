"""Combinations of a method table (pure): the cartesian product of its swept values, zip groups varying
together, and what one combination means (hyperparameters, training config, label). ``count_jobs``
counts a grid's jobs from the raw tables' axes alone, before anything is validated.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from orchestrator.grid.spec import GridSpec, MethodTable
from specs.base import from_table
from specs.job import TrainConfig
from specs.methods import hparams_class


def method_combinations(mt: MethodTable) -> list[dict[str, Any]]:
    """Every combination of a method table's swept values (zip groups vary together), in file order."""
    zipped = {k for group in mt.zips for k in group}
    axes: list[list[dict[str, Any]]] = []
    for group in mt.zips:
        axes.append([dict(zip(group, values, strict=True)) for values in zip(*(mt.sweeps[k] for k in group),
                                                                              strict=True)])
    for key, values in mt.sweeps.items():
        if key not in zipped:
            axes.append([{key: v} for v in values])
    combos = []
    for parts in itertools.product(*axes):
        combo: dict[str, Any] = {}
        for p in parts:
            combo.update(p)
        combos.append(combo)
    return combos


def count_jobs(raw: dict[str, Any], seeds: list[int], n_subsets: int) -> int:
    """How many jobs a grid file's tables expand to, from the lengths of its axes alone (no value is read or
    validated: cheap for a grid of millions). Exact for method tables; lottery chains are counted per
    level, ticket and baseline. Malformed tables count as one configuration (validation names them)."""
    methods = raw.get("methods") if isinstance(raw.get("methods"), dict) else {}
    configs: dict[str, int] = {}

    def n_configs(name: str, seen: tuple[str, ...] = ()) -> int:
        table = methods.get(name)
        if name in configs or not isinstance(table, dict) or name in seen:
            return configs.get(name, 1)
        lists = {k: len(v) for k, v in table.items() if isinstance(v, list) and k not in ("seeds", "zip")}
        zips = table.get("zip", [])
        n = 1
        for group in zips if isinstance(zips, list) else []:
            if isinstance(group, list) and group and all(isinstance(k, str) and k in lists for k in group):
                n *= lists[group[0]]
                for k in group:
                    lists.pop(k)
        for length in lists.values():
            n *= length
        init = table.get("init")
        parent = init.get("from") if isinstance(init, dict) else None
        if isinstance(parent, str) and parent in methods:
            n *= n_configs(parent, (*seen, name))
        configs[name] = n
        return n

    total = 0
    for name, table in methods.items():
        if isinstance(table, dict) and table.get("plain_jobs", True) is not False:
            own_seeds = table.get("seeds")
            total += n_configs(name) * n_subsets * (len(own_seeds) if isinstance(own_seeds, list) else len(seeds))
    lottery = raw.get("lottery") if isinstance(raw.get("lottery"), dict) else {}
    for table in lottery.values():
        if isinstance(table, dict):
            levels = table.get("levels", 1) if isinstance(table.get("levels"), int) else 1
            baselines = table.get("baselines", []) if isinstance(table.get("baselines"), list) else []
            lot_seeds = table.get("seeds") if isinstance(table.get("seeds"), list) else seeds
            total += (2 * (levels + 1) + levels * len(baselines) + 1) * len(lot_seeds)
    return total


def split_values(mt: MethodTable, combo: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a method table's fixed values + one combination into (hyperparameters, train overrides)."""
    hp_fields = {f.name for f in dataclasses.fields(hparams_class(mt.method))}
    values = {**mt.fixed, **combo}
    hp = {k: v for k, v in values.items() if k in hp_fields}
    train = {k: v for k, v in values.items() if k not in hp_fields}
    return hp, train


def config_label(name: str, combo: dict[str, Any]) -> str:
    """``name`` plus the swept values, e.g. ``simclr[lr=0.1,temperature=0.2]``."""
    if not combo:
        return name
    return f"{name}[" + ",".join(f"{k}={combo[k]}" for k in sorted(combo)) + "]"


def method_config(grid: GridSpec, mt: MethodTable, combo: dict[str, Any]) -> tuple[dict[str, Any], TrainConfig]:
    """(non-default hyperparameters, training config) of one combination of a method table."""
    hp_cls = hparams_class(mt.method)
    hp, train_over = split_values(mt, combo)
    hparams = dataclasses.asdict(from_table(hp_cls, hp))
    defaults = dataclasses.asdict(hp_cls())
    hparams = {k: v for k, v in hparams.items() if v != defaults[k]}
    return hparams, from_table(TrainConfig, {**grid.train, **train_over})
