"""The report's decision: which subset to run the next ablations on, how sure that is, and its regret.

Pure functions, no I/O. The criterion comes from the grid's ``[report]`` table:

* ``min_tau``: Kendall tau against the reference must reach this,
* ``confidence``: ... as the lower end of the two-sided seed-bootstrap interval at this level
  (0 = the point estimate),
* ``max_regret``: and choosing the best configuration on the subset may cost at most this much of the
  metric on the reference (the upper end of the regret's interval; 0 confidence = the point estimate).

Among the subsets that meet it the cheapest one (measured cost per job, else training time per job,
else training samples) is recommended. When none does, the closest one is named with what it misses.
When the grid's shape cannot decide the criterion at all, :func:`needed_configs` says how many
configurations a grid needs (exact Kendall test of a perfect agreement, from scipy) and an interval
needs at least two seeds per configuration.

The intervals come from a *paired* seed bootstrap (:func:`.bootstrap.paired_resampled_means`): seed s gives
the same initial weights to every configuration and in every subset, so each bootstrap replicate draws seed
indices once, with replacement, and every configuration on both sides (subset and reference) takes its
values at those same seeds. A shared per-seed effect (a lucky initialisation that helps every
configuration) then moves all of them together and does not widen the interval, as it does not change the
ranking. The interval covers seed variation only, for these configurations: not the choice of
configurations (another sample of configurations could rank differently).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from orchestrator.report.statistics import SubsetReport

MIN_CONFIGS = 3  # a correlation needs three configurations whatever the confidence
MAX_CONFIGS_SEARCHED = 12  # 2 / 12! is far below any confidence the grid file accepts (<= 0.999)


@dataclass(frozen=True)
class Criterion:
    """When a subset is good enough: tau (bound) >= min_tau and regret (bound) <= max_regret."""

    min_tau: float = 0.8
    confidence: float = 0.95
    max_regret: float = 0.01

    def level(self) -> float:
        """The two-sided interval level used for the CIs shown (0.95 when the criterion uses points)."""
        return self.confidence if self.confidence > 0 else 0.95

    def describe(self) -> str:
        how = "point estimate" if self.confidence == 0 else f"lower bound at {self.confidence:.0%}"
        reg = "point estimate" if self.confidence == 0 else f"upper bound at {self.confidence:.0%}"
        return f"Kendall tau >= {self.min_tau:g} ({how}) and regret <= {self.max_regret:g} ({reg})"


@dataclass(frozen=True)
class Verdict:
    """One subset against the criterion."""

    subset: str
    meets: bool
    tau_bound: float | None  # the tau the criterion reads (lower bound, or point with confidence 0)
    regret_bound: float | None  # the regret it reads (upper bound, or point)
    misses: tuple[str, ...]  # what it misses, in words (empty when it meets the criterion)


@dataclass(frozen=True)
class Decision:
    """The recommendation, first thing in every form of the report."""

    criterion: Criterion
    status: str  # "met" | "not met" | "undecidable" | "no data"
    recommended: str | None  # the cheapest subset meeting the criterion
    closest: str | None  # with no recommendation: the subset nearest to meeting it
    headline: str
    details: tuple[str, ...]
    needed_configs: int | None  # configurations a grid needs to decide the criterion
    needed_seeds: int | None  # seeds per configuration it needs
    verdicts: tuple[Verdict, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        return cls(**{**d, "criterion": Criterion(**d["criterion"]), "details": tuple(d["details"]),
                      "verdicts": tuple(Verdict(**{**v, "misses": tuple(v["misses"])}) for v in d["verdicts"])})


@lru_cache(maxsize=32)
def needed_configs(confidence: float) -> int:
    """Fewest configurations whose perfect agreement rejects 'no agreement' (tau = 0) at ``confidence``.

    Below it no tau bound above 0, let alone ``min_tau``, can be claimed honestly: with 4 configurations a
    perfect ranking happens by chance with p = 2/4! = 0.083 > 0.05 (scipy's exact Kendall test).
    """
    if confidence <= 0:
        return MIN_CONFIGS
    for n in range(MIN_CONFIGS, MAX_CONFIGS_SEARCHED + 1):
        if kendalltau(np.arange(n), np.arange(n), method="exact").pvalue <= 1 - confidence + 1e-12:
            return n
    return MAX_CONFIGS_SEARCHED


def one_swap_tau(n: int) -> float:
    """Kendall tau of n configurations ranked perfectly except one adjacent pair (tau's resolution)."""
    return 1 - 4 / (n * (n - 1)) if n >= 2 else math.nan


def configs_for_one_swap(min_tau: float) -> int:
    """Fewest configurations where one swapped pair still leaves tau >= ``min_tau``."""
    n = MIN_CONFIGS
    while one_swap_tau(n) < min_tau and n < 1000:
        n += 1
    return n


# ---------------------------------------------------------------------------------------------------------
# the decision


def _min_seeds(s: SubsetReport, ref: SubsetReport) -> int:
    ref_seeds = {c.config_key: c.n_done for c in ref.configs if c.n_done}
    pairs = [min(c.n_done, ref_seeds[c.config_key]) for c in s.configs if c.n_done and c.config_key in ref_seeds]
    return min(pairs) if pairs else 0


def _shape(s: SubsetReport, ref: SubsetReport) -> tuple[int, int]:
    """(configurations, seeds per configuration) the grid gives this comparison once every job is done."""
    ref_exp = {c.config_key: c.n_expected for c in ref.configs}
    common = [min(c.n_expected, ref_exp[c.config_key]) for c in s.configs if c.config_key in ref_exp]
    return len(common), min(common, default=0)


def judge(s: SubsetReport, ref: SubsetReport, crit: Criterion) -> Verdict:
    """Does subset ``s`` meet the criterion against the reference ``ref``? If not, what does it miss."""
    c = s.consistency
    assert c is not None
    misses: list[str] = []
    need_n, seeds = needed_configs(crit.confidence), _min_seeds(s, ref)
    interval = crit.confidence > 0
    tau_b = c.kendall_tau if not interval else (c.kendall_tau_ci[0] if c.kendall_tau_ci else None)
    reg_b = c.regret if not interval else (c.regret_ci[1] if c.regret_ci else None)
    if c.n_common == 0:
        return Verdict(s.subset, False, None, None, (f"no results yet on configurations the reference also has "
                                                    f"({_shape(s, ref)[0]} to come)",))
    if c.n_common < need_n:
        misses.append(f"too few configurations ({c.n_common} in common with the reference; the criterion needs "
                      f">= {need_n} at {crit.confidence:.0%})" if interval else
                      f"too few configurations ({c.n_common}; need >= {need_n})")
    if interval and seeds < 2:
        misses.append(f"too few seeds ({seeds} per configuration; an interval needs >= 2)")
    if c.kendall_tau is None:
        if c.n_common >= need_n:
            misses.append(f"tau undefined: {c.undefined_reason}")
    elif c.kendall_tau < crit.min_tau:
        misses.append(f"tau too low ({c.kendall_tau:.3f} < {crit.min_tau:g})")
    elif tau_b is None or tau_b < crit.min_tau:
        got = "no interval" if tau_b is None else f"lower bound {tau_b:.3f} < {crit.min_tau:g}"
        misses.append(f"interval too wide ({got}, though tau is {c.kendall_tau:.3f})")
    if reg_b is None:
        if c.n_common >= 2:
            misses.append("regret undefined")
    elif reg_b > crit.max_regret + 1e-12:
        misses.append(f"regret too high ({reg_b:.4g} > {crit.max_regret:g})")
    return Verdict(subset=s.subset, meets=not misses, tau_bound=tau_b, regret_bound=reg_b, misses=tuple(misses))


def cost_key(s: SubsetReport) -> tuple[float, float, float, str]:
    """Cheapest first: measured cost per job, else training time per job, else training samples."""
    inf = math.inf
    return (s.cost_hours_per_job if s.cost_hours_per_job is not None else inf,
            s.cost_ratio_per_job if s.cost_ratio_per_job is not None else inf,
            s.num_train_samples if s.num_train_samples is not None else inf, s.subset)


def _closeness(v: Verdict) -> tuple[int, float, float, str]:
    return (len(v.misses), -(v.tau_bound if v.tau_bound is not None else -2.0),
            v.regret_bound if v.regret_bound is not None else math.inf, v.subset)


def decide(subsets: Sequence[SubsetReport], reference: str, crit: Criterion) -> Decision:
    """The recommendation over the report's subsets (the reference itself is never recommended)."""
    ref = next((s for s in subsets if s.subset == reference), None)
    compared = [s for s in subsets if not s.is_reference and s.consistency is not None]
    need_n = needed_configs(crit.confidence)
    need_s = 2 if crit.confidence > 0 else 1
    if ref is None or not compared:
        return Decision(crit, "no data", None, None, f"No recommendation: no subset has results to compare with "
                        f"{reference}.", (), need_n, need_s, ())
    verdicts = [judge(s, ref, crit) for s in compared]
    by_name = {s.subset: s for s in compared}
    details: list[str] = []
    max_n = max(s.consistency.n_common for s in compared if s.consistency)
    shapes = [_shape(s, ref) for s in compared]
    grid_n, grid_seeds = max(n for n, _ in shapes), max(k for _, k in shapes)
    if max_n >= 2 and one_swap_tau(max_n) < crit.min_tau <= 1:
        details.append(f"with {max_n} configurations one swapped pair already gives tau {one_swap_tau(max_n):.3f} "
                       f"< {crit.min_tau:g}: only a perfect ranking can meet the criterion "
                       f"(>= {configs_for_one_swap(crit.min_tau)} configurations tolerate one swap)")
    meeting = sorted((by_name[v.subset] for v in verdicts if v.meets), key=cost_key)
    if meeting:
        best = meeting[0]
        others = [s.subset for s in meeting[1:]]
        headline = f"Recommended: {best.subset}, the cheapest subset that meets the criterion."
        details.insert(0, _summary(best, next(v for v in verdicts if v.subset == best.subset)))
        if others:
            details.append("also meeting it (dearer): " + ", ".join(others))
        return Decision(crit, "met", best.subset, None, headline, tuple(details), need_n, need_s, tuple(verdicts))
    closest = min(verdicts, key=_closeness)
    undecidable = grid_n < need_n or grid_seeds < need_s
    if undecidable:
        shape = []
        if grid_n < need_n:
            shape.append(f"{grid_n} configurations cannot give a tau lower bound above 0 at {crit.confidence:.0%} "
                         f"(even a perfect ranking of {grid_n} happens by chance too often: scipy's exact Kendall "
                         "test, not the table's seed bootstrap)")
        if grid_seeds < need_s:
            shape.append(f"{grid_seeds} seed(s) per configuration give no seed interval")
        headline = ("Undecidable: this grid is too small for the criterion - " + "; ".join(shape)
                    + f". It needs >= {max(need_n, grid_n)} configurations x >= {max(need_s, grid_seeds)} seeds.")
    else:
        headline = f"No subset meets {crit.describe()}."
    details.insert(0, f"closest: {closest.subset} - {_summary(by_name[closest.subset], closest)}; misses: "
                   + "; ".join(closest.misses))
    return Decision(crit, "undecidable" if undecidable else "not met", None, closest.subset, headline,
                    tuple(details), need_n, need_s, tuple(verdicts))


def _summary(s: SubsetReport, v: Verdict) -> str:
    c = s.consistency
    assert c is not None
    from orchestrator.report import fmt  # the table's number formats (fmt imports ranking, as this module)

    seeds = fmt.seeds_of(s)
    tau = "tau n/a" if c.kendall_tau is None else f"tau {fmt.tau_text(c, seeds)}"
    reg = "regret n/a" if c.regret is None else f"regret {fmt.regret_text(c, seeds)}"
    cost = ""
    if s.cost_hours_per_job is not None:
        cost = f", {fmt.hours_text(s.cost_hours_per_job, s.cost_unit)} per job"
    elif s.cost_ratio is not None:
        cost = f", {s.cost_ratio:.2f}x the reference's training time"
    return f"{tau}, {reg}{cost}, {c.n_common} configurations"
