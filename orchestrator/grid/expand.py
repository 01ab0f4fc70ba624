"""Expansion: a validated grid -> typed, hashed job specs (pure: no I/O beyond the dataset metadata).

Plain method tables here (subsets x configurations x seeds, ``init.from`` children after their parents);
the chains of ``[lottery.*]`` tables in :mod:`orchestrator.grid.expand_lottery`.
"""

from __future__ import annotations

from orchestrator.grid.combos import config_label, method_combinations, method_config
from orchestrator.grid.expand_lottery import expand_lottery
from orchestrator.grid.spec import ExpandedJob, GridSpec
from orchestrator.grid.validate_init import check_graph
from specs.job import JobSpec
from subsets import DatasetMeta, Manifest, resolve


def resolve_subsets(grid: GridSpec, meta: DatasetMeta) -> dict[str, Manifest]:
    """Resolve every subset of the grid against the dataset (each once)."""
    return {name: resolve(name, table, meta) for name, table in grid.subsets.items()}


def expand(grid: GridSpec, meta: DatasetMeta, manifests: dict[str, Manifest] | None = None) -> list[ExpandedJob]:
    """All jobs of ``grid``: subsets x method configurations x seeds, as typed and hashed specs.

    A table with ``init.from`` is expanded once per configuration of its parent table (parents first:
    a child's identity holds its parent's hash); its label names the parent, e.g. ``ft[lr=0.1]@simclr``.
    The chains of the grid's ``[lottery.*]`` tables follow (``orchestrator/grid/expand_lottery.py``).
    """
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
