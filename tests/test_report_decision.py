"""The report's decision: recommendation met / not met / undecidable, regret and its interval, vs scipy."""

from __future__ import annotations

import json
from dataclasses import replace
from math import factorial

import numpy as np
import pytest
from scipy.stats import bootstrap, kendalltau, spearmanr

from orchestrator.report import JobResult, Report, build_report, report_json
from orchestrator.report.bootstrap import paired_resampled_means, regret_rows, regret_with_ci, seed_draws
from orchestrator.report.decision import Criterion, needed_configs
from orchestrator.report.render import evaluated_networks, render_markdown
from orchestrator.report.statistics import kendall_tau_b_rows

CONFIGS = [f"simclr[lr={lr}]" for lr in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)]
REF = [0.50, 0.55, 0.60, 0.65, 0.70, 0.75]
NOISE = (-0.002, 0.0, 0.002)  # three seeds, small spread


def rows(subset: str, means: list[float], *, hours: float, noise: tuple[float, ...] = NOISE,
         configs: list[str] = CONFIGS, rotate: int = 0) -> list[JobResult]:
    """Seed s adds ``noise[(s + rotate * c) % len(noise)]`` to configuration c: with ``rotate`` 0 the same
    to every configuration (a per-seed effect, as a lucky initialisation), else each its own."""
    k = len(noise)
    return [JobResult(subset, c, "k" + c, seed, "COMPLETED",
                      {"knn_top1": m + noise[(seed + rotate * i) % k]}, cost_hours=hours,
                      cost_unit="GPU-hours")
            for i, (c, m) in enumerate(zip(configs, means, strict=True)) for seed in range(k)]


def test_recommends_the_cheapest_subset_meeting_the_criterion() -> None:
    res = (rows("full", REF, hours=4.0) + rows("big", [m + 0.1 for m in REF], hours=2.0)
           + rows("small", [m - 0.2 for m in REF], hours=0.5)
           + rows("cheap_wrong", REF[::-1], hours=0.1))  # cheapest, but reversed: must not be chosen
    rep = build_report("g", res, bootstrap=300, criterion=Criterion(0.8, 0.95, 0.01), plan=(100, 3))
    d = rep.decision
    assert d is not None and d.status == "met" and d.recommended == "small"
    assert {v.subset: v.meets for v in d.verdicts} == {"big": True, "small": True, "cheap_wrong": False}
    wrong = next(v for v in d.verdicts if v.subset == "cheap_wrong")
    assert any(m.startswith("tau too low") for m in wrong.misses) and any("regret too high" in m for m in wrong.misses)
    assert "also meeting it (dearer): big" in d.details
    # --plan: per-job cost x 300 jobs on the reference vs on the recommended subset
    assert rep.plan is not None and rep.plan.subset == "small" and rep.plan.recommended
    assert rep.plan.reference_hours == pytest.approx(1200.0) and rep.plan.subset_hours == pytest.approx(150.0)
    assert rep.plan.factor == pytest.approx(8.0)
    # the decision is the first thing of the JSON and survives the round trip
    text = report_json(rep)
    assert next(iter(json.loads(text))) == "decision"
    assert Report.from_dict(json.loads(text)) == rep


def test_no_subset_meets_it_names_the_closest_and_what_it_misses() -> None:
    wide = (-0.06, 0.0, 0.06)  # seeds far apart, unlike across configurations: the point tau is fine, the
    # interval is not
    res = (rows("full", REF, hours=4.0) + rows("noisy", [m + 0.1 for m in REF], hours=1.0, noise=wide, rotate=1)
           + rows("swapped", [0.50, 0.55, 0.60, 0.65, 0.75, 0.70], hours=1.0))
    rep = build_report("g", res, bootstrap=400, criterion=Criterion(0.8, 0.95, 0.01))
    d = rep.decision
    assert d is not None and d.status == "not met" and d.recommended is None
    by = {v.subset: v for v in d.verdicts}
    noisy = by["noisy"]
    assert rep.subset("noisy").consistency.kendall_tau == 1.0  # point estimate perfect ...
    assert noisy.tau_bound is not None and noisy.tau_bound < 0.8  # ... but the lower bound is not
    assert any(m.startswith("interval too wide") for m in noisy.misses)
    # swapped: its two best configurations exchange places -> tau 13/15 is fine, but it picks lr=0.4
    sw = by["swapped"]
    assert rep.subset("swapped").consistency.kendall_tau == pytest.approx(13 / 15)
    assert rep.subset("swapped").consistency.regret == pytest.approx(0.05)
    assert any(m.startswith("regret too high") for m in sw.misses)
    assert d.closest == "swapped" and d.headline.startswith("No subset meets")  # fewer misses
    assert d.details[0].startswith(f"closest: {d.closest}") and "misses:" in d.details[0]
    # with confidence 0 the point estimates decide, and the noisy subset qualifies
    point = build_report("g", res, bootstrap=400, criterion=Criterion(0.8, 0.0, 0.01)).decision
    assert point is not None and point.status == "met" and point.recommended == "noisy"


def test_a_grid_too_small_for_the_criterion_is_undecidable_and_says_what_it_needs() -> None:
    four = CONFIGS[:4]
    res = rows("full", REF[:4], hours=1.0, configs=four) + rows("sub", REF[:4], hours=0.1, configs=four)
    rep = build_report("g", res, bootstrap=200, criterion=Criterion(0.8, 0.95, 0.01))
    d = rep.decision
    assert d is not None and d.status == "undecidable" and d.recommended is None and d.closest == "sub"
    assert d.needed_configs == 5 and d.needed_seeds == 2
    assert "4 configurations cannot give a tau lower bound" in d.headline and ">= 5 configurations" in d.headline
    assert any("too few configurations (4 in common" in m for m in d.verdicts[0].misses)
    assert any("only a perfect ranking can meet the criterion" in line for line in d.details)  # 1 swap: tau 0.667
    # one seed per configuration: no seed interval at all
    one = rows("full", REF, hours=1.0, noise=(0.0,)) + rows("sub", REF, hours=0.1, noise=(0.0,))
    d1 = build_report("g", one, bootstrap=200).decision
    assert d1 is not None and d1.status == "undecidable" and "1 seed(s) per configuration" in d1.headline
    assert any(m.startswith("too few seeds") for m in d1.verdicts[0].misses)


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_needed_configs_is_the_smallest_grid_where_a_perfect_ranking_is_significant(confidence: float) -> None:
    n = needed_configs(confidence)
    p = kendalltau(range(n), range(n), method="exact").pvalue
    p_less = kendalltau(range(n - 1), range(n - 1), method="exact").pvalue
    assert p <= 1 - confidence < p_less
    assert p == pytest.approx(2 / factorial(n))


def test_regret_point_ties_and_direction() -> None:
    ref = np.array([[0.6, 0.7, 0.8]])
    assert regret_rows(np.array([[3.0, 2.0, 1.0]]), ref)[0] == pytest.approx(0.2)  # picks 0.6 instead of 0.8
    assert regret_rows(np.array([[1.0, 2.0, 3.0]]), ref)[0] == 0.0
    assert regret_rows(np.array([[2.0, 2.0, 1.0]]), ref)[0] == pytest.approx(0.8 - 0.65)  # tie: either pick
    # lower is better (e.g. a loss): the best is the smallest, regret stays >= 0
    assert regret_rows(np.array([[3.0, 2.0, 1.0]]), ref, higher_is_better=False)[0] == pytest.approx(0.2)
    assert regret_rows(np.array([[1.0, 2.0, 3.0]]), ref, higher_is_better=False)[0] == 0.0


def test_regret_interval_matches_scipy_paired_bootstrap() -> None:
    # the reference's two best configurations are close: which one is best flips between resamples
    ref = [[0.70, 0.72, 0.74], [0.71, 0.73, 0.69], [0.60, 0.61, 0.62]]
    sub = [[0.50, 0.53, 0.49], [0.52, 0.55, 0.47], [0.40, 0.41, 0.39]]
    point, ci = regret_with_ci(sub, ref, higher_is_better=True, n_boot=20_000, rng=np.random.default_rng(1))

    def stat(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        k = len(samples) // 2
        s = np.stack([x.mean(axis=axis) for x in samples[:k]], axis=-1)
        r = np.stack([x.mean(axis=axis) for x in samples[k:]], axis=-1)
        return regret_rows(s.reshape(-1, k), r.reshape(-1, k)).reshape(s.shape[:-1])

    data = tuple(np.array(v) for v in (*sub, *ref))
    assert point == pytest.approx(float(stat(*data)))
    # paired: seed s (index s of every list) is one draw for every configuration on both sides
    sp = bootstrap(data, stat, n_resamples=20_000, vectorized=True, paired=True, method="percentile",
                   confidence_level=0.95, rng=np.random.default_rng(2)).confidence_interval
    assert ci is not None and ci[0] <= point <= ci[1]
    assert ci == pytest.approx((sp.low, sp.high), abs=0.002)


def test_tau_and_rho_match_scipy_on_a_published_style_table_with_ties_and_missing() -> None:
    # a published-style table: full-data top-1 of SSL methods, and a small subset where two methods tie
    # and one method has no result yet
    full = {"simclr": 69.3, "moco-v2": 71.1, "byol": 74.3, "swav": 75.3, "dino": 75.3, "barlow": 73.2}
    small = {"simclr": 61.0, "moco-v2": 63.5, "byol": 63.5, "swav": 66.0, "dino": 65.1}  # barlow missing
    res = ([JobResult("full", c, c, 0, "COMPLETED", {"top1": v}) for c, v in full.items()]
           + [JobResult("small", c, c, 0, "COMPLETED", {"top1": v}) for c, v in small.items()]
           + [JobResult("small", "barlow", "barlow", 0, "FAILED", {})])
    c = build_report("pub", res, metric="top1", bootstrap=0).subset("small").consistency
    assert c is not None and c.n_common == 5
    common = sorted(small)
    x, y = [small[k] for k in common], [full[k] for k in common]
    assert c.kendall_tau == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)
    assert c.spearman_rho == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert c.kendall_p == pytest.approx(kendalltau(x, y).pvalue)
    # full's best is a tie (swav, dino at 75.3); small picks swav: no regret
    assert c.regret == 0.0


def test_an_unfinished_grid_of_the_right_shape_is_not_called_undecidable() -> None:
    # six configurations x three seeds planned, only three configurations finished on the subset so far
    res = rows("full", REF, hours=1.0) + rows("sub", REF, hours=0.1)
    res = [r if r.subset == "full" or r.config in CONFIGS[:3] else JobResult(r.subset, r.config, r.config_key,
                                                                             r.seed, "RUNNING", {})
           for r in res]
    d = build_report("g", res, bootstrap=200).decision
    assert d is not None and d.status == "not met" and d.closest == "sub"
    assert any("too few configurations (3 in common" in m for m in d.verdicts[0].misses)


def test_paired_bootstrap_draws_the_same_seeds_for_every_configuration_and_subset() -> None:
    # configuration c on seed s: its own level + the seed's effect; every replicate must keep the levels'
    # differences exactly (the same seeds are averaged for each), on both sides
    seed_effect = {3: -0.3, 5: 0.0, 8: 0.25, 9: 0.4}
    sub = [{s: lvl + e for s, e in seed_effect.items()} for lvl in (0.1, 0.2, 0.3)]
    ref = [{s: lvl + 2 * e for s, e in seed_effect.items()} for lvl in (0.5, 0.7, 0.9)]
    boot_sub, boot_ref = paired_resampled_means([sub, ref], 500, np.random.default_rng(0))
    assert boot_sub.shape == (500, 3) and boot_ref.shape == (500, 3)
    np.testing.assert_allclose(boot_sub - boot_sub[:, :1], np.tile([0.0, 0.1, 0.2], (500, 1)), atol=1e-12)
    # the reference moves by twice the subset's seed effect in every replicate: the same seeds were drawn
    np.testing.assert_allclose(boot_ref[:, 0] - 0.5, 2 * (boot_sub[:, 0] - 0.1), atol=1e-12)
    assert boot_sub[:, 0].std() > 0.1  # the seeds were resampled, not fixed
    # each replicate draws as many seeds as there are, with replacement
    counts = seed_draws(4, 300, np.random.default_rng(1))
    assert (counts.sum(axis=1) == 4).all() and (counts == 0).any() and (counts >= 2).any()


def test_paired_bootstrap_keeps_a_configuration_without_any_drawn_seed_at_its_mean() -> None:
    # an unfinished grid: one configuration has only seed 7, the others seeds 0-2
    vals = [{0: 0.1, 1: 0.2, 2: 0.3}, {0: 0.5, 1: 0.6, 2: 0.7}, {7: 0.9}]
    (boot,) = paired_resampled_means([vals], 2000, np.random.default_rng(0))
    assert np.isfinite(boot).all() and set(np.unique(boot[:, 2])) == {0.9}
    assert boot[:, 0].min() == pytest.approx(0.1) and boot[:, 0].max() == pytest.approx(0.3)


def test_a_shared_seed_effect_leaves_the_paired_interval_narrow_where_an_independent_one_is_wide() -> None:
    # five configurations 0.01 apart; seed s shifts every configuration by much more (a lucky initialisation
    # helps every configuration alike), in both subsets: the ranking never changes between seeds
    effect = (-0.08, -0.03, 0.0, 0.04, 0.09)
    levels = [0.50, 0.51, 0.52, 0.53, 0.54]
    res = [JobResult(subset, c, "k" + c, seed, "COMPLETED", {"knn_top1": lvl + shift + e})
           for subset, shift in (("full", 0.0), ("sub", 0.1)) for c, lvl in zip(CONFIGS, levels, strict=False)
           for seed, e in enumerate(effect)]
    c = build_report("g", res, bootstrap=2000, criterion=Criterion(0.8, 0.95, 0.01)).subset("sub").consistency
    assert c.kendall_tau == 1.0 and c.kendall_tau_ci == (1.0, 1.0) and c.regret_ci == (0.0, 0.0)

    def tau(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        k = len(samples) // 2
        s = np.stack([x.mean(axis=axis) for x in samples[:k]], axis=-1)
        r = np.stack([x.mean(axis=axis) for x in samples[k:]], axis=-1)
        return kendall_tau_b_rows(s.reshape(-1, k), r.reshape(-1, k)).reshape(s.shape[:-1])

    data = tuple(np.array([lvl + shift + e for e in effect]) for shift in (0.1, 0.0) for lvl in levels)
    independent = bootstrap(data, tau, n_resamples=2000, vectorized=True, paired=False, method="percentile",
                            rng=np.random.default_rng(0)).confidence_interval
    assert independent.low < 0.5  # resampling each configuration's seeds on its own mistakes the seed
    # effect for a difference between configurations


def test_the_report_says_what_its_interval_covers_and_which_network_was_evaluated() -> None:
    res = [replace(r, method="dino" if r.config == CONFIGS[0] else "byol")
           for r in rows("full", REF, hours=1.0) + rows("sub", REF, hours=0.1)]
    rep = build_report("g", res, bootstrap=100)
    assert rep.subset("full").configs[0].method == "dino"
    md = render_markdown(rep, {})
    assert "paired bootstrap samples over seeds" in md and "not the choice of configurations" in md
    assert "evaluated on: byol: online backbone; dino: teacher (EMA of the student)" in md
    assert Report.from_dict(json.loads(report_json(rep))) == rep  # the method survives the JSON form
    loss = build_report("g", [replace(r, metrics={"mae_val_loss": 1.0}) for r in res], metric="mae_val_loss",
                        bootstrap=0)
    assert evaluated_networks(loss) is None  # not a frozen-feature metric
