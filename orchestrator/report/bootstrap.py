"""The paired seed bootstrap the report's intervals come from (pure numpy, no I/O).

Seed s gives the same initial weights to every configuration and in every subset, so each bootstrap
replicate draws seed indices once, with replacement, and every configuration on both sides (subset and
reference) takes its values at those same seeds (:func:`paired_resampled_means`); see
:mod:`orchestrator.report.decision` for what the intervals mean and what they decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# one configuration's per-seed values: seed -> value (a plain sequence: its seeds are 0, 1, 2, ...)
SeedValues = Mapping[int, float] | Sequence[float]


def regret_rows(sub_means: np.ndarray, ref_means: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Regret per row (shape R x n): the reference's best value minus the reference value of the subset's pick.

    Configurations tied for best on the subset are picked at random, so their reference values are averaged.
    Always >= 0 (in metric units; for lower-is-better metrics the sign is turned).
    """
    sign = 1.0 if higher_is_better else -1.0
    sub, ref = sign * np.atleast_2d(sub_means), sign * np.atleast_2d(ref_means)
    picked = sub == sub.max(axis=1, keepdims=True)
    return ref.max(axis=1) - (ref * picked).sum(axis=1) / picked.sum(axis=1)


def by_seed(values: SeedValues) -> dict[int, float]:
    """``values`` as seed -> value (a plain sequence is seeds 0, 1, 2, ...)."""
    if isinstance(values, Mapping):
        return {int(k): float(v) for k, v in values.items()}
    return {i: float(v) for i, v in enumerate(values)}


def seed_draws(n_seeds: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot x n_seeds counts: how often each seed index is drawn when ``n_seeds`` indices are drawn with
    replacement, once per replicate (the one draw every configuration shares)."""
    draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds)) + n_seeds * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n_seeds).reshape(n_boot, n_seeds).astype(float)


def paired_resampled_means(groups: Sequence[Sequence[SeedValues]], n_boot: int,
                           rng: np.random.Generator) -> list[np.ndarray]:
    """Paired bootstrap replicates (one n_boot x n array per group, e.g. subset and reference) of every
    configuration's mean over its seeds: each replicate draws seed indices once, from the seeds any
    configuration of any group has, and every configuration averages its values at the drawn seeds (a seed
    drawn twice counts twice). A configuration that lacks every drawn seed (possible only when
    configurations have different seeds, e.g. an unfinished grid) keeps its plain mean in that replicate."""
    maps = [[by_seed(v) for v in group] for group in groups]
    seeds = sorted({s for group in maps for m in group for s in m})
    weights = seed_draws(len(seeds), n_boot, rng)
    col = {s: i for i, s in enumerate(seeds)}
    out = []
    for group in maps:
        arr = np.empty((n_boot, len(group)))
        for c, m in enumerate(group):
            w = weights[:, [col[s] for s in m]]
            vals = np.array(list(m.values()), dtype=float)
            total = w.sum(axis=1)
            arr[:, c] = np.where(total > 0, (w @ vals) / np.where(total > 0, total, 1.0), vals.mean())
        out.append(arr)
    return out


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The two-sided percentile interval of ``samples`` at ``level`` (rounded to 12 decimals)."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, (tail, 100 - tail))
    return round(float(low), 12), round(float(high), 12)


def regret_with_ci(sub_values: Sequence[SeedValues], ref_values: Sequence[SeedValues], *,
                   higher_is_better: bool, n_boot: int, rng: np.random.Generator,
                   level: float = 0.95) -> tuple[float | None, tuple[float, float] | None]:
    """Regret of choosing on the subset (point) and its paired seed-bootstrap percentile interval at ``level``."""
    if len(sub_values) < 2:
        return None, None
    sub = np.array([[np.mean(list(by_seed(v).values())) for v in sub_values]])
    ref = np.array([[np.mean(list(by_seed(v).values())) for v in ref_values]])
    point = round(float(regret_rows(sub, ref, higher_is_better)[0]), 12)
    if n_boot <= 0:
        return point, None
    boot_sub, boot_ref = paired_resampled_means([sub_values, ref_values], n_boot, rng)
    return point, percentile_interval(regret_rows(boot_sub, boot_ref, higher_is_better), level)
