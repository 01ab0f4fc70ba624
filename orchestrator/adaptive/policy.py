"""One look of an adaptive study: judge each subset, choose where one more seed can change the answer,
drop what cannot meet the criterion, and say when to stop. Pure: results in, :class:`Look` out.

**Statistics.** Nothing is recomputed here: every look builds the report
(:func:`orchestrator.report.ranking.build_report`, its paired seed bootstrap and its :func:`decide`) at the
*per-look* confidence, so a subset is judged exactly as the report judges it.

**Honest confidence (optional stopping).** Looking after every round and stopping at the first subset
that meets the criterion would inflate the rate of recommending a subset that does not meet it. The
confidence is spent with **Bonferroni over a bounded number of looks**: with ``[report] confidence`` = 1 - a
and K = ``[adaptive] looks`` (default: ``seeds_max - seeds_min + 1``), every look uses the two-sided interval
at 1 - a / K, and the study never takes more than K looks (the K-th look is final). A wrong recommendation
needs a wrong "meets" at one of the K looks, each of probability <= a / K, so at most a over the whole
study (the union bound; no assumption on how the looks depend on each other). Chosen over an
alpha-spending function (O'Brien-Fleming, Pocock) because those need the looks' joint distribution, which a
bootstrap tau over a handful of seeds does not give; Bonferroni is conservative but holds whatever the
dependence. tests/test_adaptive_policy.py measures the rate by simulation.

**Decisions at a look.** Each subset still in the study is

* *meets*: the report's verdict at the per-look confidence meets the criterion,
* *cannot meet*: tau's upper bound < ``min_tau``, or regret's lower bound > ``max_regret``, or it has
  every configuration and still too few for the criterion, or (from 3 seeds on) tau cannot reach
  ``min_tau`` by ``seeds_max`` seeds: even if the true tau were its current upper bound, the interval,
  narrowing as 1/sqrt(seeds), would keep its lower bound below ``min_tau``. It is dropped (its unfinished
  jobs are cancelled). Dropping is *futility*: it never makes a wrong recommendation more likely (it only
  takes candidates away), so it needs no share of the confidence; what it may cost is a missed
  recommendation, which the tests measure by simulation. With 2 seeds, the paired bootstrap has three
  distinct replicates (seed 0 alone, seed 1 alone, both), so "upper bound < min_tau" there reads: each
  seed alone and their mean rank the configurations too differently from the reference,
* *undecided*: otherwise.

The study stops when a subset meets the criterion and no cheaper subset is undecided ("decided"), every
subset is dropped ("all rejected"), the budget is spent, the K looks are spent, or no (subset,
configuration) may get another seed ("seeds_max reached"). Otherwise one more seed goes to each
configuration whose order against another is uncertain (the bootstrap interval of their difference holds
0) or that has fewer than 2 seeds, in an undecided subset cheaper than any meeting one, or in the
reference while such a subset is left.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from orchestrator.adaptive.settings import AdaptiveSettings
from orchestrator.report.bootstrap import paired_resampled_means
from orchestrator.report.decision import Criterion, cost_key, needed_configs
from orchestrator.report.ranking import JobResult, Report, build_report
from orchestrator.report.statistics import ConfigStat, SubsetReport

MEETS, CANNOT, UNDECIDED = "meets", "cannot meet", "undecided"
STOP_DECIDED, STOP_REJECTED, STOP_BUDGET = "decided", "all rejected", "budget spent"
STOP_LOOKS, STOP_SEEDS = "looks spent", "seeds_max reached"
MIN_SEEDS_TO_DROP = 2  # one seed: no interval at all
MIN_SEEDS_TO_PROJECT = 3  # the 1/sqrt(seeds) projection needs an interval that is not just 3 replicates


@dataclass(frozen=True)
class Judgement:
    """One subset at one look."""

    subset: str
    state: str  # MEETS | CANNOT | UNDECIDED
    why: str


@dataclass(frozen=True)
class Addition:
    """One more seed for a (subset, configuration)."""

    subset: str
    config_key: str
    config: str


@dataclass(frozen=True)
class Look:
    """What one look decided."""

    number: int  # 1, 2, ... (the K-th is final)
    confidence: float  # the per-look two-sided level
    judgements: tuple[Judgement, ...]
    add: tuple[Addition, ...]
    drop: tuple[str, ...]  # subsets dropped at this look
    stop: str | None  # why the study stops (None: it goes on with ``add``)
    recommended: str | None  # the report's recommendation at this look's confidence
    hours: float  # device-hours spent so far

    def summary(self) -> str:
        """One line: the look, its drops, additions and stop."""
        parts = [f"look {self.number} at {self.confidence:.4g}"]
        if self.drop:
            parts.append("dropped " + ", ".join(self.drop))
        if self.add:
            parts.append(f"+{len(self.add)} seeds ({', '.join(sorted({a.subset for a in self.add}))})")
        if self.stop:
            rec = f": {self.recommended}" if self.recommended and self.stop == STOP_DECIDED else ""
            parts.append(f"stopped ({self.stop}{rec})")
        return "; ".join(parts)


def look_confidence(crit: Criterion, settings: AdaptiveSettings) -> float:
    """The per-look level: Bonferroni over the study's bounded number of looks."""
    return 1 - (1 - crit.confidence) / settings.max_looks


@dataclass(frozen=True)
class LookInput:
    """What the report needs besides the results (the grid's ``[report]`` settings)."""

    criterion: Criterion
    reference: str = "full"
    metric: str = "knn_top1"
    higher_is_better: bool = True
    bootstrap: int = 1000
    seed: int = 0


def take_look(results: Sequence[JobResult], settings: AdaptiveSettings, inp: LookInput, *, number: int,
              dropped: Sequence[str] = ()) -> Look:
    """Look number ``number`` at ``results`` (every job recorded so far); ``dropped``: subsets dropped earlier."""
    conf = look_confidence(inp.criterion, settings)
    crit = replace(inp.criterion, confidence=conf)
    rows = [r for r in results if r.subset not in dropped]
    rep = build_report("adaptive", rows, metric=inp.metric, reference=inp.reference, top_k=1,
                       higher_is_better=inp.higher_is_better, bootstrap=inp.bootstrap, seed=inp.seed + number,
                       criterion=crit)
    hours = sum(r.cost_hours or 0.0 for r in results)
    subs = {s.subset: s for s in rep.subsets}
    judgements = tuple(_judge(s, rep, crit, settings.seeds_max) for s in rep.subsets if not s.is_reference)
    drop = tuple(j.subset for j in judgements if j.state == CANNOT)
    live = [j for j in judgements if j.state != CANNOT]
    meeting = sorted((subs[j.subset] for j in live if j.state == MEETS), key=cost_key)
    best = meeting[0] if meeting else None
    open_ = [subs[j.subset] for j in live if j.state == UNDECIDED and (best is None or cost_key(subs[j.subset])
                                                                         < cost_key(best))]
    rec = best.subset if best else None
    base = {"number": number, "confidence": conf, "judgements": judgements, "drop": drop, "recommended": rec,
            "hours": hours}
    if best is not None and not open_:
        return Look(add=(), stop=STOP_DECIDED, **base)
    if not live:
        return Look(add=(), stop=STOP_REJECTED, **base)
    if settings.budget_hours and hours >= settings.budget_hours:
        return Look(add=(), stop=STOP_BUDGET, **base)
    if number >= settings.max_looks:
        return Look(add=(), stop=STOP_LOOKS, **base)
    add = _additions(open_, subs.get(inp.reference), settings.seeds_max, conf, inp.seed + number)
    return Look(add=add, stop=None if add else STOP_SEEDS, **base)


def tau_reach(ci: tuple[float, float], seeds: int, seeds_max: int) -> float:
    """The lower bound tau would have at ``seeds_max`` seeds if its true value were its current upper bound
    and its interval's half-width shrank as 1/sqrt(seeds): the best a subset can still hope for."""
    low, high = ci
    return high - (high - low) / 2 * (seeds / max(seeds, seeds_max)) ** 0.5


def _judge(s: SubsetReport, rep: Report, crit: Criterion, seeds_max: int) -> Judgement:
    v = next((v for v in rep.decision.verdicts if v.subset == s.subset), None) if rep.decision else None
    c = s.consistency
    if v is not None and v.meets:
        return Judgement(s.subset, MEETS, f"tau >= {v.tau_bound:.3f}, regret <= {v.regret_bound:.4g} "
                         f"at {crit.level():.4g}")
    ref = next(r for r in rep.subsets if r.is_reference)
    seeds = min((cs.n_done for cs in (*s.configs, *ref.configs)), default=0)
    if seeds < MIN_SEEDS_TO_DROP:
        why = "; ".join(v.misses) if v is not None and v.misses else "no results yet"
        return Judgement(s.subset, UNDECIDED, f"{why} (a drop needs >= {MIN_SEEDS_TO_DROP} seeds, have {seeds})")
    two = seeds == 2  # the bootstrap's three replicates: either seed alone, and both
    if c is not None and c.kendall_tau_ci and c.kendall_tau_ci[1] < crit.min_tau:
        return Judgement(s.subset, CANNOT, f"tau's upper bound {c.kendall_tau_ci[1]:.3f} < {crit.min_tau:g}"
                         + (" (2 seeds: the best of either seed alone and both)" if two else ""))
    if c is not None and c.kendall_tau_ci and seeds >= MIN_SEEDS_TO_PROJECT:
        reach = tau_reach(c.kendall_tau_ci, seeds, seeds_max)
        if reach < crit.min_tau:
            return Judgement(s.subset, CANNOT, f"tau cannot reach {crit.min_tau:g} by {seeds_max} seeds: were it "
                             f"{c.kendall_tau_ci[1]:.3f} (its upper bound), the lower bound would be {reach:.3f}")
    if c is not None and c.regret_ci and c.regret_ci[0] > crit.max_regret + 1e-12:
        return Judgement(s.subset, CANNOT, f"regret's lower bound {c.regret_ci[0]:.4g} > {crit.max_regret:g}"
                         + (" (2 seeds: the least of either seed alone and both)" if two else ""))
    if c is not None and all(cs.n_done for cs in s.configs) and c.n_common < needed_configs(crit.confidence):
        return Judgement(s.subset, CANNOT, f"{c.n_common} configurations; the criterion needs "
                         f">= {needed_configs(crit.confidence)} at {crit.confidence:.4g}")
    why = "; ".join(v.misses) if v is not None else "no results yet"
    return Judgement(s.subset, UNDECIDED, why)


def _additions(open_: Sequence[SubsetReport], ref: SubsetReport | None, seeds_max: int, level: float,
               seed: int) -> tuple[Addition, ...]:
    out: list[Addition] = []
    for s in [*open_, *([ref] if ref is not None and open_ else [])]:
        growable = [c for c in s.configs if c.n_expected < seeds_max]
        uncertain = _uncertain(s.configs, level, np.random.default_rng([seed, zlib.crc32(s.subset.encode())]))
        chosen = [c for c in growable if c.config_key in uncertain or c.n_expected < MIN_SEEDS_TO_DROP]
        if not chosen and s is not ref:  # undecided without an uncertain pair: every configuration moves on
            chosen = growable
        out += [Addition(s.subset, c.config_key, c.config) for c in chosen]
    return tuple(out)


def _uncertain(configs: Sequence[ConfigStat], level: float, rng: np.random.Generator,
               n_boot: int = 400) -> set[str]:
    """Configurations whose order against another is uncertain: the paired-bootstrap interval of the
    difference of their means holds 0 (or one of them has fewer than two finished seeds)."""
    done = [c for c in configs if c.n_done]
    out = {c.config_key for c in configs if c.n_done < 2}
    if len(done) < 2:
        return out
    (boot,) = paired_resampled_means([[dict(zip(c.seeds, c.values, strict=True)) for c in done]], n_boot, rng)
    tail = (1 - level) / 2
    for i in range(len(done)):
        for j in range(i + 1, len(done)):
            d = boot[:, i] - boot[:, j]
            if min(np.mean(d >= 0), np.mean(d <= 0)) > tail:
                out |= {done[i].config_key, done[j].config_key}
    return out
