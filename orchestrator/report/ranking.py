"""The rank-consistency report of a grid: does each subset rank training configurations like the reference?

Pure functions over :class:`JobResult` rows (no I/O). :func:`build_report` groups the rows per
(subset, configuration), averages the ranking metric over the completed seeds, compares every subset's
ranking of the configurations it shares with the reference (:mod:`.statistics`: Kendall tau-b, Spearman
rho, top-k overlap, paired seed-bootstrap intervals), adds cost and completeness and the recommendation
(:mod:`.decision`). The result is a frozen :class:`Report` that round-trips through ``to_dict``/``from_dict``.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from db import JobState
from orchestrator.report.cost import Plan, plan_study
from orchestrator.report.cost import per_job as cost_per_job
from orchestrator.report.decision import Criterion, Decision, decide
from orchestrator.report.statistics import (
    ConfigStat,
    Consistency,
    FailedJob,
    SubsetReport,
    compare_rankings,
    competition_ranks,
)

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class JobResult:
    """One job of a grid as the report sees it (gathered from the store by the CLI)."""

    subset: str  # subset name in the grid, e.g. "full", "uniform100"
    config: str  # configuration label, e.g. "simclr[lr=0.1,temperature=0.2]"
    config_key: str  # stable hash of the configuration (same across subsets and seeds)
    seed: int
    state: str  # PENDING/QUEUED/RUNNING/COMPLETED/FAILED/CANCELLED
    metrics: dict[str, float]  # final metrics of COMPLETED jobs
    external: bool = False  # a row of an external results table (measured elsewhere)
    cost_hours: float | None = None  # device-hours of all its attempts (None: no attempt recorded)
    cost_unit: str = ""  # "GPU-hours" or "CPU-hours"
    method: str = ""  # the training method ("" when unknown, e.g. external results)


@dataclass(frozen=True)
class Report:
    """The rank-consistency report of one grid."""

    grid: str
    metric: str
    reference: str
    higher_is_better: bool
    top_k: int
    bootstrap: int
    seed: int
    complete: bool
    jobs_total: int
    jobs_completed: int
    warning: str | None  # one line when the grid is incomplete
    warnings: tuple[str, ...]
    subsets: tuple[SubsetReport, ...]  # reference first, then by Kendall tau (desc)
    decision: Decision | None = None  # the recommendation
    plan: Plan | None = None  # ``report --plan NxS``
    sources: tuple[str, ...] = ()  # the grids and external tables in this report
    code_versions: tuple[dict[str, Any], ...] = ()  # the code behind the numbers (report/code_section.py)
    efficiency: tuple[dict[str, Any], ...] = ()  # the jobs' resource use (report/efficiency_section.py)
    adaptive: tuple[str, ...] = ()  # an adaptive study's looks in words (report/adaptive_section.py)
    tickets: tuple[dict[str, Any], ...] = ()  # reused tickets: source, audit, saving (report/ticket_section.py)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (no NaN: undefined numbers are None), the decision first."""
        d = asdict(self)
        return {"decision": d.pop("decision"), "plan": d.pop("plan"), **d}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Inverse of :meth:`to_dict` (also accepts the dict parsed back from JSON)."""
        subs = []
        for s in data["subsets"]:
            cons = s["consistency"]
            if cons is not None:
                ci, rci = cons["kendall_tau_ci"], cons.get("regret_ci")
                cons = Consistency(**{**cons, "kendall_tau_ci": tuple(ci) if ci is not None else None,
                                      "regret_ci": tuple(rci) if rci is not None else None,
                                      "notes": tuple(cons["notes"])})
            configs = tuple(ConfigStat(**{**c, "seeds": tuple(c["seeds"]), "values": tuple(c["values"])})
                            for c in s["configs"])
            failed = tuple(FailedJob(**f) for f in s["failed"])
            subs.append(SubsetReport(**{**s, "configs": configs, "failed": failed, "consistency": cons}))
        top = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        dec, plan = top.get("decision"), top.get("plan")
        return cls(**{**top, "warnings": tuple(top["warnings"]), "subsets": tuple(subs),
                      "decision": Decision.from_dict(dec) if dec else None, "plan": Plan(**plan) if plan else None,
                      "sources": tuple(top.get("sources", ())),
                      "code_versions": tuple(top.get("code_versions", ())),
                      "efficiency": tuple(top.get("efficiency", ())),
                      "adaptive": tuple(top.get("adaptive", ())),
                      "tickets": tuple(top.get("tickets", ()))})

    def subset(self, name: str) -> SubsetReport:
        """The entry of subset ``name`` (KeyError if absent)."""
        for s in self.subsets:
            if s.subset == name:
                return s
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------------------
# grouping job rows into the report


@dataclass
class _Group:
    config: str
    config_key: str
    method: str = ""
    expected: int = 0
    done: list[tuple[int, float]] = field(default_factory=list)  # (seed, value) of completed seeds


def build_report(grid_name: str, results: list[JobResult], *, metric: str = "knn_top1", reference: str = "full",
                 top_k: int = 3, higher_is_better: bool = True, bootstrap: int = 1000, seed: int = 0,
                 criterion: Criterion | None = None, plan: tuple[int, int] | None = None,
                 sources: Sequence[str] = ()) -> Report:
    """The rank-consistency report of a grid from its jobs (finished or not; unfinished ones are counted).

    ``criterion`` (default: :class:`Criterion`'s defaults) decides the recommendation; ``plan`` =
    (configurations, seeds) adds the cost of such a study on the reference vs the recommended subset.

    Raises ValueError when ``reference`` is not a subset of the grid, ``top_k`` < 1, or no completed job
    has ``metric``.
    """
    if top_k < 1:
        raise ValueError(f"top_k: expected an integer >= 1, got {top_k}")
    by_subset: dict[str, list[JobResult]] = {}
    for r in results:
        by_subset.setdefault(r.subset, []).append(r)
    if results and reference not in by_subset:
        raise ValueError(f"reference: expected one of the grid's subsets ({', '.join(sorted(by_subset))}), "
                         f"got {reference!r}")
    completed = [r for r in results if r.state == JobState.COMPLETED]
    if completed and not any(metric in r.metrics for r in completed):
        have = sorted({k for r in completed for k in r.metrics})
        raise ValueError(f"metric: no completed job has {metric!r} (have: {', '.join(have)})")

    crit = criterion or Criterion()
    warnings: list[str] = []
    groups = {name: _group(name, rows, metric, warnings) for name, rows in by_subset.items()}
    ref_groups = groups.get(reference, {})
    ref_means = {k: _mean(g) for k, g in ref_groups.items() if g.done}
    ref_ranks = _ranks(ref_means, higher_is_better)
    ref_rows = by_subset.get(reference, [])

    subsets = []
    for name, rows in by_subset.items():
        grp = groups[name]
        is_ref = name == reference
        means = {k: _mean(g) for k, g in grp.items() if g.done}
        ranks = _ranks(means, higher_is_better)
        configs = tuple(_config_stat(g, ranks.get(k), ref_ranks.get(k))
                        for k, g in sorted(grp.items(), key=lambda kv: kv[1].config))
        consistency = None
        if not is_ref:
            common = sorted((k for k in means if k in ref_means), key=lambda k: grp[k].config)
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            consistency = compare_rankings([grp[k].config for k in common],
                                           [dict(grp[k].done) for k in common],
                                           [dict(ref_groups[k].done) for k in common],
                                           top_k=top_k, higher_is_better=higher_is_better, n_boot=bootstrap, rng=rng,
                                           level=crit.level())
            extra = _coverage_notes(means, ref_means, grp, ref_groups, reference)
            if extra:
                consistency = replace(consistency, notes=consistency.notes + extra)
        subsets.append(_subset_report(name, rows, is_ref, ref_rows, configs, consistency))
        if subsets[-1].failed:
            failed = ", ".join(f"{f.config} seed {f.seed}" for f in subsets[-1].failed)
            warnings.append(f"{name}: {len(subsets[-1].failed)} FAILED job(s): {failed}")

    subsets.sort(key=lambda s: _subset_order(s, reference))
    n_done = len(completed)
    complete = n_done == len(results) and bool(results)
    warning = None
    if not results:
        warning = f"grid {grid_name!r} has no jobs"
    elif not complete:
        counts = _state_counts(results)
        rest = ", ".join(f"{n} {s}" for s, n in counts.items() if s != JobState.COMPLETED and n)
        warning = (f"incomplete grid: {n_done}/{len(results)} jobs completed ({rest}); "
                   "statistics are provisional (computed on finished jobs only)")
    decision = decide(subsets, reference, crit)
    return Report(grid=grid_name, metric=metric, reference=reference, higher_is_better=higher_is_better,
                  top_k=top_k, bootstrap=bootstrap, seed=seed, complete=complete, jobs_total=len(results),
                  jobs_completed=n_done, warning=warning, warnings=tuple(warnings), subsets=tuple(subsets),
                  decision=decision, plan=_plan(plan, subsets, reference, decision) if plan else None,
                  sources=tuple(sources) or (grid_name,))


def _plan(shape: tuple[int, int], subsets: Sequence[SubsetReport], reference: str, decision: Decision) -> Plan:
    by_name = {s.subset: s for s in subsets}
    ref = by_name.get(reference)
    name = decision.recommended or decision.closest
    sub = by_name.get(name) if name else None
    return plan_study(shape[0], shape[1], name, decision.recommended is not None,
                      ref.cost_hours_per_job if ref else None, ref.cost_unit if ref else "",
                      sub.cost_hours_per_job if sub else None, sub.cost_unit if sub else "")


def _group(subset: str, rows: Iterable[JobResult], metric: str, warnings: list[str]) -> dict[str, _Group]:
    """config_key -> its jobs' expected count and completed (seed, value) pairs."""
    out: dict[str, _Group] = {}
    missing: list[str] = []
    for r in sorted(rows, key=lambda r: (r.config_key, r.seed)):
        g = out.setdefault(r.config_key, _Group(r.config, r.config_key, r.method))
        g.expected += 1
        if r.state != JobState.COMPLETED:
            continue
        value = r.metrics.get(metric)
        if value is None or not math.isfinite(float(value)):
            missing.append(f"{r.config} seed {r.seed}")
            continue
        g.done.append((r.seed, float(value)))
    if missing:
        warnings.append(f"{subset}: {len(missing)} completed job(s) without a finite {metric!r}, left out: "
                        + ", ".join(missing))
    return out


def _mean(g: _Group) -> float:
    return float(np.mean([v for _, v in g.done]))


def _ranks(means: dict[str, float], higher_is_better: bool) -> dict[str, int]:
    keys = list(means)
    return dict(zip(keys, competition_ranks([means[k] for k in keys], higher_is_better), strict=True))


def _config_stat(g: _Group, rank: int | None, ref_rank: int | None) -> ConfigStat:
    vals = [v for _, v in g.done]
    return ConfigStat(config=g.config, config_key=g.config_key, mean=float(np.mean(vals)) if vals else None,
                      std=float(np.std(vals, ddof=1)) if len(vals) >= 2 else None, n_done=len(vals),
                      n_expected=g.expected, seeds=tuple(s for s, _ in g.done), values=tuple(vals), rank=rank,
                      ref_rank=ref_rank, method=g.method)


def _coverage_notes(means: dict[str, float], ref_means: dict[str, float], grp: dict[str, _Group],
                    ref_groups: dict[str, _Group], reference: str) -> tuple[str, ...]:
    notes = []
    only_ref = sorted(ref_groups[k].config for k in ref_means if k not in means)
    only_sub = sorted(grp[k].config for k in means if k not in ref_means)
    if only_ref:
        notes.append(f"not compared (no result on this subset yet): {', '.join(only_ref)}")
    if only_sub:
        notes.append(f"not compared (no result on {reference} yet): {', '.join(only_sub)}")
    return tuple(notes)


def _state_counts(rows: Iterable[JobResult]) -> dict[str, int]:
    counts = dict.fromkeys(JobState.ALL, 0)
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    return counts


def _train_time(rows: Iterable[JobResult]) -> float:
    return float(sum(r.metrics.get("train_time_s", 0.0) for r in rows if r.state == JobState.COMPLETED))


def _mean_metric(rows: Sequence[JobResult], name: str) -> float | None:
    vals = [r.metrics[name] for r in rows if r.state == JobState.COMPLETED and name in r.metrics]
    return float(np.mean(vals)) if vals else None


def _subset_report(name: str, rows: list[JobResult], is_ref: bool, ref_rows: list[JobResult],
                   configs: tuple[ConfigStat, ...], consistency: Consistency | None) -> SubsetReport:
    done = [r for r in rows if r.state == JobState.COMPLETED]
    hours = [r.cost_hours for r in rows if r.cost_hours is not None]
    units = sorted({r.cost_unit for r in rows if r.cost_hours is not None})
    time, ref_time = _train_time(rows), _train_time(ref_rows)
    per_job, ref_per_job = _mean_metric(rows, "train_time_s"), _mean_metric(ref_rows, "train_time_s")
    return SubsetReport(
        subset=name, is_reference=is_ref, jobs_total=len(rows), jobs_completed=len(done),
        state_counts=_state_counts(rows),
        failed=tuple(FailedJob(r.config, r.seed) for r in sorted(rows, key=lambda r: (r.config, r.seed))
                     if r.state == JobState.FAILED),
        provisional=len(done) < len(rows) or any(r.state != JobState.COMPLETED for r in ref_rows),
        num_classes=_mean_metric(rows, "num_classes"), num_train_samples=_mean_metric(rows, "num_train_samples"),
        train_time_s=time, cost_ratio=time / ref_time if done and ref_time > 0 else None,
        cost_ratio_per_job=per_job / ref_per_job if per_job is not None and ref_per_job else None,
        configs=configs, consistency=consistency, external=any(r.external for r in rows),
        cost_hours=sum(hours) if hours else None, cost_hours_per_job=cost_per_job(hours), cost_unit="+".join(units),
    )


def _subset_order(s: SubsetReport, reference: str) -> tuple[int, float, str]:
    """Reference first, then by Kendall tau (desc), undefined tau last, then by name."""
    if s.subset == reference:
        return (0, 0.0, s.subset)
    tau = s.consistency.kendall_tau if s.consistency else None
    return (1, -tau, s.subset) if tau is not None else (2, 0.0, s.subset)
