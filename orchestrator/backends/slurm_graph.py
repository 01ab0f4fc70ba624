"""Planning a job graph as SLURM arrays with dependencies, so that the whole graph is queued at once.

Jobs are cut into arrays level by level (a child is one level deeper than its deepest parent). A child
array whose task i depends exactly on task i of one parent array (every seed/subset of a parent
configuration has its child) waits with ``aftercorr:<parent array>``; any other child array waits with
``afterok`` on the very parent tasks its members need. Parents submitted by an earlier launch are named by
their SLURM ids. Every dependent array is submitted with ``--kill-on-invalid-dep=no``: when a parent fails,
the child stays pending (reason ``DependencyNeverSatisfied``) until the parent is resubmitted, which
cancels and resubmits the child against the new parent task (:meth:`SlurmBackend._submit`).

``[resources] jobs_per_worker``: an array that waits on nothing (its jobs are ready) runs up to that many
jobs of one code snapshot per task, one after the other (:func:`pack`); its children wait on the very
tasks that hold their parents (``afterok``; never ``aftercorr``, whose task i is one parent job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.backends.base import PlanJob, graph_levels
from orchestrator.backends.slurm_profile import SlurmProfile, executor_parameters, group_key


@dataclass
class ArrayPlan:
    """One array to sbatch: its parameters, members in task order and what it waits for."""

    params: dict[str, Any]
    members: list[PlanJob]
    corr: int | None = None  # index of the planned array it is aligned with (aftercorr)
    after: list[tuple[int, int]] = field(default_factory=list)  # (planned array, task) it needs (afterok)
    after_ids: list[str] = field(default_factory=list)  # SLURM ids of parents submitted before (afterok)
    task_of: list[int] = field(default_factory=list)  # the task of each member (empty: member i is task i)

    @property
    def tasks(self) -> list[list[PlanJob]]:
        """The members each array task runs, in task order."""
        if not self.task_of:
            return [[j] for j in self.members]
        out: list[list[PlanJob]] = [[] for _ in range(max(self.task_of) + 1)]
        for j, t in zip(self.members, self.task_of, strict=True):
            out[t].append(j)
        return out

    @property
    def batched(self) -> bool:
        return any(len(t) > 1 for t in self.tasks)

    def dependency(self, array_ids: list[str]) -> str | None:
        """The ``--dependency`` value, given the SLURM ids of the arrays planned before it."""
        if self.corr is not None:
            return f"aftercorr:{array_ids[self.corr]}"
        ids = [f"{array_ids[a]}_{t}" for a, t in self.after] + self.after_ids
        return "afterok:" + ":".join(ids) if ids else None


def pack(members: list[PlanJob], codes: dict[str, str | None]) -> tuple[list[PlanJob], list[int]]:
    """Members reordered so that each task's jobs are adjacent, and the task of each: up to
    ``jobs_per_worker`` jobs of one code snapshot (``codes``) per task, in the order they came."""
    groups: dict[tuple[str | None, int], list[PlanJob]] = {}
    for j in members:
        groups.setdefault((codes.get(j.job_hash), j.spec.resources.jobs_per_worker), []).append(j)
    ordered: list[PlanJob] = []
    task_of: list[int] = []
    task = 0
    for (_, size), group in groups.items():
        for i in range(0, len(group), size):
            ordered += group[i:i + size]
            task_of += [task] * len(group[i:i + size])
            task += 1
    return ordered, task_of


def plan_graph(jobs: list[PlanJob], profile: SlurmProfile, chunk: int,
               known_ids: dict[str, str] | None = None, codes: dict[str, str | None] | None = None
               ) -> list[ArrayPlan]:
    """Arrays for ``jobs`` (parents before children), each at most ``chunk`` tasks. ``known_ids``: SLURM
    ids of parents outside ``jobs`` that are still queued or running (completed ones need no dependency).
    ``codes``: each job's code snapshot (jobs of one batched task share one)."""
    levels = graph_levels(jobs)
    plans: list[ArrayPlan] = []
    where: dict[str, tuple[int, int]] = {}  # job hash -> (planned array, task index)
    ids = dict(known_ids or {})

    def add(plan: ArrayPlan) -> None:
        for t, j in zip(plan.task_of or range(len(plan.members)), plan.members, strict=True):
            where[j.job_hash] = (len(plans), t)
        plans.append(plan)

    for level in sorted(set(levels.values())):
        groups: dict[tuple[str, int | None], tuple[dict[str, Any], list[PlanJob]]] = {}
        for j in (j for j in jobs if levels[j.job_hash] == level):
            params = executor_parameters(j.spec.resources, profile)
            inside = [where[p][0] for p in j.parents if p in where]
            corr_key = inside[0] if len(j.parents) == 1 and inside and not plans[inside[0]].batched else None
            groups.setdefault((group_key(params), corr_key), (params, []))[1].append(j)
        for (_, parent_array), (params, members) in groups.items():
            rest = members
            if parent_array is not None:
                rest = _aligned(plans, parent_array, members, params, where, add)
            for i in range(0, len(rest), chunk):
                part = rest[i:i + chunk]
                after = sorted({where[p] for j in part for p in j.parents if p in where})
                after_ids = sorted({ids[p] for j in part for p in j.parents if p not in where and p in ids})
                plan = ArrayPlan(params, part, after=after, after_ids=after_ids)
                if not after and not after_ids and any(j.spec.resources.jobs_per_worker > 1 for j in part):
                    plan.members, plan.task_of = pack(part, codes or {})  # ready jobs only
                add(plan)
    return plans


def _aligned(plans: list[ArrayPlan], parent_array: int, members: list[PlanJob], params: dict[str, Any],
             where: dict[str, tuple[int, int]], add: Any) -> list[PlanJob]:
    """Plan arrays of ``members`` aligned task by task with ``plans[parent_array]`` (aftercorr); return the
    members that fit no such array."""
    size = len(plans[parent_array].members)
    layers: list[dict[int, PlanJob]] = []
    for j in members:  # the k-th child of each parent task goes to layer k
        task = where[j.parents[0]][1]
        for layer in layers:
            if task not in layer:
                layer[task] = j
                break
        else:
            layers.append({task: j})
    rest: list[PlanJob] = []
    for layer in layers:
        if len(layer) == size:
            add(ArrayPlan(params, [layer[t] for t in range(size)], corr=parent_array))
        else:
            rest.extend(layer.values())
    return rest
