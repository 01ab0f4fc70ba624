"""Expansion: a validated grid -> typed, hashed job specs (pure: no I/O beyond the dataset metadata)."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from specs.base import from_table
from specs.job import JobSpec, TrainConfig
from specs.methods import hparams_class
from subsets import DatasetMeta, Manifest, resolve


@dataclass(frozen=True)
class ExpandedJob:
    """A job spec with the grid's labels for it."""

    spec: JobSpec
    subset_name: str
    config_name: str


def method_combinations(mt: Any) -> list[dict[str, Any]]:
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


def split_values(mt: Any, combo: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
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


def resolve_subsets(grid: Any, meta: DatasetMeta) -> dict[str, Manifest]:
    """Resolve every subset of the grid against the dataset (each once)."""
    return {name: resolve(name, table, meta) for name, table in grid.subsets.items()}


def method_config(grid: Any, mt: Any, combo: dict[str, Any]) -> tuple[dict[str, Any], TrainConfig]:
    """(non-default hyperparameters, training config) of one combination of a method table."""
    hp_cls = hparams_class(mt.method)
    hp, train_over = split_values(mt, combo)
    hparams = dataclasses.asdict(from_table(hp_cls, hp))
    defaults = dataclasses.asdict(hp_cls())
    hparams = {k: v for k, v in hparams.items() if v != defaults[k]}
    return hparams, from_table(TrainConfig, {**grid.train, **train_over})


def expand(grid: Any, meta: DatasetMeta, manifests: dict[str, Manifest] | None = None) -> list[ExpandedJob]:
    """All jobs of ``grid``: subsets x method configurations x seeds, as typed and hashed specs.

    A table with ``init.from`` is expanded once per configuration of its parent table (parents first:
    a child's identity holds its parent's hash); its label names the parent, e.g. ``ft[lr=0.1]@simclr``.
    The chains of the grid's ``[lottery.*]`` tables follow (``orchestrator/lottery_expand.py``).
    """
    from orchestrator.grid_init import check_graph
    from orchestrator.lottery_expand import expand_lottery

    manifests = manifests or resolve_subsets(grid, meta)
    fingerprint = meta.fingerprint  # both hash arrays: once per grid, not once per job
    manifest_hashes = {name: m.content_hash for name, m in manifests.items()}
    by_table: dict[str, list[ExpandedJob]] = {}
    for name in check_graph(grid.methods, grid.train):
        mt = grid.methods[name]
        jobs = by_table[name] = []
        if mt.name in grid.lottery.template_only:  # a table that only serves [lottery.*] tables
            continue
        init = mt.init
        parents: dict[tuple[str, str, int], JobSpec] = {}
        if init is not None and init.parent is not None:
            parents = {(p.config_name, p.subset_name, p.spec.seed): p.spec for p in by_table[init.parent]}
        parent_labels = list(dict.fromkeys(label for label, _, _ in parents)) or [None]
        for combo in method_combinations(mt):
            hparams, train = method_config(grid, mt, combo)
            for parent_label in parent_labels:
                label = config_label(mt.name, combo) + (f"@{parent_label}" if parent_label else "")
                for sname in manifests:
                    for seed in mt.seeds:
                        spec_init, depends_on = None, ()
                        if parent_label is not None:
                            parent = parents[(parent_label, sname, seed)]
                            spec_init = init.spec_init(parent.job_hash, parent.config_key)
                            depends_on = (parent.job_hash,)
                        elif init is not None:
                            spec_init = init.spec_init()
                        spec = JobSpec(
                            grid=grid.name, dataset_root=grid.dataset_root, dataset_fingerprint=fingerprint,
                            subset_name=sname, subset=grid.subsets[sname], manifest_hash=manifest_hashes[sname],
                            config_name=label, method=mt.method, hparams=hparams, train=train, eval=grid.eval,
                            seed=seed, resources=mt.resources, depends_on=depends_on, init=spec_init,
                        )
                        jobs.append(ExpandedJob(spec, sname, label))
    plain = [ej for name in grid.methods for ej in by_table[name]]
    return plain + expand_lottery(grid, meta, manifests, known={j.spec.job_hash for j in plain})
