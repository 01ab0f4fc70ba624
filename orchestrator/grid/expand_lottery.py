"""Expansion of ``[lottery.*]`` tables into job chains (pure, like :mod:`orchestrator.grid.expand`).

Per setting and seed: level 0 (dense, on the generation task and subset; after its pre-trained start
job when ``start = { from = ... }``), level L depending on level L-1, and for every level an evaluation
job that retrains the ticket on the evaluation task and subset (depending on that level), plus one
evaluation job per baseline at every pruned level. A job's identity holds its parents' hashes but never
the number of levels, so raising ``levels`` only adds jobs.
"""

from __future__ import annotations

from typing import Any

from orchestrator.grid.combos import method_config
from orchestrator.grid.spec import ExpandedJob, GridSpec, LotterySetting
from specs.base import SpecError
from specs.job import JobSpec, TrainConfig
from specs.lottery import REWIND_START, ROLE_EVAL, ROLE_LEVEL, TICKET, Step, level_label
from subsets import DatasetMeta, Manifest


def steps_per_epoch(train: TrainConfig, resources: Any, n_train: int) -> int:
    """Optimiser steps of one epoch, as the worker counts them (per-rank batches, last one dropped)."""
    world = resources.nodes * resources.nproc_per_node
    available = n_train // world
    per_rank = min(max(1, train.batch_size // world), max(1, available))
    return available // per_rank


def expand_lottery(grid: GridSpec, meta: DatasetMeta, manifests: dict[str, Manifest],
                   known: set[str] | None = None) -> list[ExpandedJob]:
    """Every job of the grid's lottery settings, parents before children, less those in ``known`` (e.g. a
    pre-trained start that is also an ordinary job of the grid)."""
    seen = set(known or ())
    jobs: list[ExpandedJob] = []
    for st in grid.lottery.settings.values():
        for job in _setting_jobs(grid, meta, manifests, st):
            if job.spec.job_hash not in seen:
                seen.add(job.spec.job_hash)
                jobs.append(job)
    return jobs


def _spec(grid: GridSpec, meta: DatasetMeta, manifests: dict[str, Manifest], table: str, subset: str, seed: int,
          label: str, **graph: Any) -> ExpandedJob:
    mt = grid.methods[table]
    hparams, train = method_config(grid, mt, {})
    spec = JobSpec(grid=grid.name, dataset_root=grid.dataset_root, dataset_fingerprint=meta.fingerprint,
                   subset_name=subset, subset=grid.subsets[subset], manifest_hash=manifests[subset].content_hash,
                   config_name=label, method=mt.method, hparams=hparams, train=train, eval=grid.eval, seed=seed,
                   resources=mt.resources, **graph)
    return ExpandedJob(spec, subset, label)


def _check_rewind(grid: GridSpec, manifests: dict[str, Manifest], st: LotterySetting) -> None:
    """The rewind point lies before the end of the generation and of the evaluation (which start there)."""
    if st.rewind == REWIND_START:
        return
    for table, subset, what in ((st.generate, st.subset, "training"),
                                (st.evaluate_method, st.evaluate_subset, "the evaluation too (it starts there)")):
        mt = grid.methods[table]
        _, train = method_config(grid, mt, {})
        total = train.epochs * steps_per_epoch(train, mt.resources, len(manifests[subset].indices["train"]))
        if Step.parse(st.rewind).iteration(total // train.epochs) >= total:
            raise SpecError(f"lottery.{st.name}.rewind", f"a point before the end of {what} ({total} iterations "
                            f"of [methods.{table}] on {subset}; got {st.rewind})", str(grid.path))


def _setting_jobs(grid: GridSpec, meta: DatasetMeta, manifests: dict[str, Manifest],
                  st: LotterySetting) -> list[ExpandedJob]:
    _check_rewind(grid, manifests, st)
    patterns = {"prunable": list(st.prunable), "not_prunable": list(st.not_prunable)}
    jobs: list[ExpandedJob] = []
    for seed in st.seeds:
        level0: dict[str, Any] = {"role": ROLE_LEVEL, "level": 0, "rewind": st.rewind}
        parents: tuple[str, ...] = ()
        if st.start is not None and "from" in st.start:
            src = st.start.get("subset", st.subset)
            pre = _spec(grid, meta, manifests, st.start["from"], src, seed, st.start["from"])
            jobs.append(pre)
            level0["start"] = {"job": pre.spec.job_hash}
            parents = (pre.spec.job_hash,)
        elif st.start is not None:
            level0["start"] = dict(st.start)
        chain = [_spec(grid, meta, manifests, st.generate, st.subset, seed, level_label(st.name, 0),
                       depends_on=parents, lottery=level0)]
        h0 = chain[0].spec.job_hash
        for level in range(1, st.levels + 1):
            lot = {"role": ROLE_LEVEL, "level": level, "prune_fraction": st.prune_fraction, "strategy": st.strategy,
                   "rewind_job": h0, **patterns}
            chain.append(_spec(grid, meta, manifests, st.generate, st.subset, seed, level_label(st.name, level),
                               depends_on=(chain[-1].spec.job_hash,), lottery=lot))
        jobs += chain
        for level, parent in enumerate(chain):
            for ticket in (TICKET, *(st.baselines if level else ())):
                lot = {"role": ROLE_EVAL, "ticket": ticket, "level": level, "rewind_job": h0, **patterns}
                jobs.append(_spec(grid, meta, manifests, st.evaluate_method, st.evaluate_subset, seed,
                                  level_label(st.name, level, ticket), depends_on=(parent.spec.job_hash,),
                                  lottery=lot))
    return jobs
