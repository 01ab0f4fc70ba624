"""Rank-consistency statistics: how one subset ranks configurations against the reference (pure, no I/O).

The per-subset results (:class:`SubsetReport`, :class:`ConfigStat`, :class:`Consistency`) and the
statistics behind them: Kendall tau-b, Spearman rho, top-1 agreement, top-k overlap, pairwise order
agreement and the paired seed-bootstrap intervals of tau and of the regret (:mod:`.bootstrap`).
:mod:`.decision` judges these; :mod:`.ranking` builds them from a grid's job rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import kendalltau, rankdata, spearmanr

from orchestrator.report.bootstrap import (
    SeedValues,
    by_seed,
    paired_resampled_means,
    percentile_interval,
    regret_with_ci,
)

MIN_CONFIGS_FOR_CORRELATION = 3
_BOOT_CHUNK_CELLS = 2_000_000  # bootstrap replicates x config pairs held in memory at once


@dataclass(frozen=True)
class ConfigStat:
    """The ranking metric of one configuration on one subset, over its completed seeds."""

    config: str
    config_key: str
    mean: float | None  # None: no completed seed with the metric
    std: float | None  # sample std (ddof=1); None with fewer than 2 seeds
    n_done: int
    n_expected: int
    seeds: tuple[int, ...]
    values: tuple[float, ...]  # per seed, in the order of ``seeds``
    rank: int | None  # 1 = best among this subset's configurations with a mean (ties share the best rank)
    ref_rank: int | None  # the configuration's rank on the reference (None if it has no mean there)
    method: str = ""  # the training method ("" when unknown, e.g. external results)


@dataclass(frozen=True)
class FailedJob:
    config: str
    seed: int


@dataclass(frozen=True)
class Consistency:
    """How one subset's ranking agrees with the reference's, over the configurations both have."""

    n_common: int
    kendall_tau: float | None
    kendall_p: float | None
    kendall_tau_ci: tuple[float, float] | None  # bootstrap over seeds, 2.5/97.5 percentiles
    spearman_rho: float | None
    spearman_p: float | None
    undefined_reason: str | None  # why tau/rho are None
    top1_agree: bool | None
    top_k: int
    top_k_overlap: float | None
    pairwise_agreement: float | None
    notes: tuple[str, ...] = ()
    regret: float | None = None  # reference metric of the reference's best minus that of the subset's best
    regret_ci: tuple[float, float] | None = None  # bootstrap over seeds, same level as the tau CI


@dataclass(frozen=True)
class SubsetReport:
    """One subset: completeness, cost, per-configuration means and (unless reference) consistency."""

    subset: str
    is_reference: bool
    jobs_total: int
    jobs_completed: int
    state_counts: dict[str, int]
    failed: tuple[FailedJob, ...]
    provisional: bool  # this subset or the reference is not finished
    num_classes: float | None
    num_train_samples: float | None
    train_time_s: float  # sum over completed jobs
    cost_ratio: float | None  # train_time_s / reference's train_time_s
    cost_ratio_per_job: float | None  # mean train time per completed job / the reference's
    configs: tuple[ConfigStat, ...]
    consistency: Consistency | None  # None for the reference
    external: bool = False  # results from an external table, not from this grid's jobs
    cost_hours: float | None = None  # device-hours of every attempt of its jobs (failed/preempted too)
    cost_hours_per_job: float | None = None
    cost_unit: str = ""


# ---------------------------------------------------------------------------------------------------------
# statistics on plain arrays


def competition_ranks(means: Sequence[float], higher_is_better: bool = True) -> list[int]:
    """1 = best; tied values share the best rank of their group (1, 2, 2, 4)."""
    x = np.asarray(means, dtype=float)
    return [int(r) for r in rankdata(-x if higher_is_better else x, method="min")]


def pairwise_agreement(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Fraction of pairs ordered the same way by ``a`` and ``b``; a pair tied on either side counts half."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2:
        return None
    i, j = np.triu_indices(len(x), 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    score = np.where((sx == 0) | (sy == 0), 0.5, (sx == sy).astype(float))
    return float(score.mean())


def top_set(labels: Sequence[str], means: Sequence[float], k: int, higher_is_better: bool = True) -> list[str]:
    """The ``k`` best labels; ties at the boundary are broken by label so the choice is deterministic."""
    sign = -1.0 if higher_is_better else 1.0
    order = sorted(range(len(labels)), key=lambda n: (sign * means[n], labels[n]))
    return [labels[n] for n in order[:k]]


def best_set(labels: Sequence[str], means: Sequence[float], higher_is_better: bool = True) -> set[str]:
    """Every label that shares the best value."""
    best = max(means) if higher_is_better else min(means)
    return {lab for lab, m in zip(labels, means, strict=True) if m == best}


def kendall_tau_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b between matching rows of ``x`` and ``y`` (shape R x n); NaN where a row is all tied.

    tau-b = sum(sign dx * sign dy) / sqrt(#pairs untied in x * #pairs untied in y), the same number as
    ``scipy.stats.kendalltau`` but vectorised over bootstrap replicates.
    """
    i, j = np.triu_indices(x.shape[1], 1)
    out = np.empty(x.shape[0])
    step = max(1, _BOOT_CHUNK_CELLS // max(1, len(i)))
    for lo in range(0, x.shape[0], step):
        sx = np.sign(x[lo:lo + step, i] - x[lo:lo + step, j])
        sy = np.sign(y[lo:lo + step, i] - y[lo:lo + step, j])
        den = np.sqrt(np.count_nonzero(sx, axis=1).astype(float) * np.count_nonzero(sy, axis=1))
        num = (sx * sy).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo:lo + step] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def bootstrap_tau_ci(sub_values: Sequence[SeedValues], ref_values: Sequence[SeedValues],
                     n_boot: int, rng: np.random.Generator,
                     level: float = 0.95) -> tuple[tuple[float, float] | None, str | None]:
    """Percentile CI of Kendall tau under the paired seed bootstrap (the same seeds drawn for every
    configuration on both sides, ``bootstrap.paired_resampled_means``).

    ``sub_values[c]`` / ``ref_values[c]``: the per-seed metric of configuration c. Returns (ci, note).
    """
    if n_boot <= 0:
        return None, "bootstrap disabled"
    taus = kendall_tau_b_rows(*paired_resampled_means([sub_values, ref_values], n_boot, rng))
    ok = taus[~np.isnan(taus)]
    if len(ok) < n_boot / 2:
        return None, f"tau CI undefined: {n_boot - len(ok)} of {n_boot} bootstrap samples were all tied"
    low, high = percentile_interval(ok, level)
    note = None if len(ok) == n_boot else f"tau CI over {len(ok)} of {n_boot} bootstrap samples (rest all tied)"
    return (low, high), note


def compare_rankings(labels: Sequence[str], sub_values: Sequence[SeedValues],
                     ref_values: Sequence[SeedValues], *, top_k: int, higher_is_better: bool,
                     n_boot: int, rng: np.random.Generator, level: float = 0.95) -> Consistency:
    """All agreement statistics between a subset and the reference over the configurations both have
    (``*_values[c]``: configuration c's metric per seed, seed -> value)."""
    n = len(labels)
    sub = [float(np.mean(list(by_seed(v).values()))) for v in sub_values]
    ref = [float(np.mean(list(by_seed(v).values()))) for v in ref_values]
    notes: list[str] = []
    tau = tau_p = rho = rho_p = None
    ci = None
    reason = None
    if n < MIN_CONFIGS_FOR_CORRELATION:
        reason = f"only {n} configuration(s) in common with the reference (need >= {MIN_CONFIGS_FOR_CORRELATION})"
    elif len(set(sub)) == 1 or len(set(ref)) == 1:
        side = "subset" if len(set(sub)) == 1 else "reference"
        reason = f"every configuration ties on the {side}: no ranking to compare"
    else:
        kt, sr = kendalltau(sub, ref), spearmanr(sub, ref)
        tau, tau_p, rho, rho_p = (_stat(kt.statistic), _finite(kt.pvalue), _stat(sr.statistic), _finite(sr.pvalue))
        ci, note = bootstrap_tau_ci(sub_values, ref_values, n_boot, rng, level)
        if note:
            notes.append(note)
        if all(len(by_seed(v)) < 2 for v in (*sub_values, *ref_values)):
            notes.append("one seed per configuration: the tau CI has no seed uncertainty to show")
    top1 = None
    overlap = None
    if n >= 2:
        top1 = bool(best_set(labels, sub, higher_is_better) & best_set(labels, ref, higher_is_better))
    if n > top_k:
        common_top = set(top_set(labels, sub, top_k, higher_is_better)) & set(top_set(labels, ref, top_k,
                                                                                      higher_is_better))
        overlap = len(common_top) / top_k
    elif n:
        notes.append(f"top-{top_k} overlap undefined: only {n} configuration(s) in common")
    regret, regret_ci = regret_with_ci(sub_values, ref_values, higher_is_better=higher_is_better, n_boot=n_boot,
                                       rng=rng, level=level)
    return Consistency(n_common=n, kendall_tau=tau, kendall_p=tau_p, kendall_tau_ci=ci, spearman_rho=rho,
                       spearman_p=rho_p, undefined_reason=reason, top1_agree=top1, top_k=top_k,
                       top_k_overlap=overlap, pairwise_agreement=pairwise_agreement(sub, ref), notes=tuple(notes),
                       regret=regret, regret_ci=regret_ci)


def _finite(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def _stat(x: Any) -> float | None:
    """A correlation rounded to 12 decimals, so that a perfect agreement reads exactly 1.0 (scipy: 0.999...)."""
    v = _finite(x)
    return None if v is None else round(v, 12)
