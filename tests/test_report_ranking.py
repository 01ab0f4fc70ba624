"""Rank-consistency statistics on hand-built result sets whose answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from orchestrator.report.ranking import JobResult, Report, build_report
from orchestrator.report.render import report_json
from orchestrator.report.statistics import competition_ranks, kendall_tau_b_rows, pairwise_agreement

CONFIGS = [f"simclr[lr={lr}]" for lr in (0.1, 0.2, 0.3, 0.4, 0.5)]


def rows(subset: str, values: dict[str, list[float]], *, state: str = "COMPLETED", time_s: float = 100.0,
         samples: float | None = None) -> list[JobResult]:
    """One completed job per (config, seed value); config_key derived from the label."""
    out = []
    for config, seeds in values.items():
        for seed, v in enumerate(seeds):
            metrics = {"knn_top1": v, "train_time_s": time_s}
            if samples is not None:
                metrics["num_train_samples"] = samples
            out.append(JobResult(subset, config, "key-" + config, seed, state, metrics if state == "COMPLETED" else {}))
    return out


def single(means: list[float], configs: list[str] = CONFIGS) -> dict[str, list[float]]:
    return {c: [m] for c, m in zip(configs, means, strict=True)}


REF = [0.1, 0.2, 0.3, 0.4, 0.5]  # ranks: lr=0.5 best (1), lr=0.1 worst (5)


def test_identical_ranking_agrees_perfectly() -> None:
    # same order, different absolute level (the subset is easier): only the order matters
    res = rows("full", single(REF)) + rows("sub", single([m + 0.3 for m in REF]))
    c = build_report("g", res).subset("sub").consistency
    assert c is not None
    assert c.kendall_tau == 1.0 and c.spearman_rho == 1.0  # exactly, not 0.999...
    assert c.top1_agree is True and c.pairwise_agreement == 1.0 and c.top_k_overlap == 1.0
    assert c.n_common == 5 and c.undefined_reason is None


def test_reversed_ranking_gives_minus_one() -> None:
    res = rows("full", single(REF)) + rows("sub", single(REF[::-1]))
    c = build_report("g", res, top_k=2).subset("sub").consistency
    assert c is not None
    assert c.kendall_tau == pytest.approx(-1.0) and c.spearman_rho == pytest.approx(-1.0)
    assert c.top1_agree is False and c.pairwise_agreement == 0.0
    assert c.top_k_overlap == 0.0  # top-2 {0.5, 0.4} vs {0.1, 0.2}


def test_known_permutation_matches_hand_computation() -> None:
    # reference ranks of lr=0.1..0.5: 5 4 3 2 1; the subset swaps the two best and the two worst:
    sub = [0.2, 0.1, 0.3, 0.5, 0.4]  # subset ranks 4 5 3 1 2
    # 10 pairs, 2 discordant ((0.1,0.2) and (0.4,0.5)): tau = (8 - 2) / 10 = 0.6
    # sum d^2 = 1 + 1 + 0 + 1 + 1 = 4: rho = 1 - 6 * 4 / (5 * 24) = 0.8
    res = rows("full", single(REF)) + rows("sub", single(sub))
    rep = build_report("g", res, top_k=2)
    c = rep.subset("sub").consistency
    assert c is not None
    assert c.kendall_tau == pytest.approx(0.6) and c.spearman_rho == pytest.approx(0.8)
    assert c.pairwise_agreement == pytest.approx(0.8)
    assert c.top1_agree is False  # subset's best lr=0.4, reference's best lr=0.5
    assert c.top_k_overlap == 1.0  # both top-2 are {lr=0.4, lr=0.5}
    ranks = {s.config: (s.rank, s.ref_rank) for s in rep.subset("sub").configs}
    assert ranks == {"simclr[lr=0.1]": (4, 5), "simclr[lr=0.2]": (5, 4), "simclr[lr=0.3]": (3, 3),
                     "simclr[lr=0.4]": (1, 2), "simclr[lr=0.5]": (2, 1)}


def test_ties_tau_b_pairwise_half_and_shared_ranks() -> None:
    configs = CONFIGS[:4]
    res = rows("full", single([1.0, 2.0, 3.0, 4.0], configs)) + rows("sub", single([1.0, 2.0, 2.0, 4.0], configs))
    rep = build_report("g", res)
    c = rep.subset("sub").consistency
    assert c is not None
    # 6 pairs: 5 concordant, 1 tied in the subset only: tau-b = 5 / sqrt(6 * 5)
    assert c.kendall_tau == pytest.approx(5 / math.sqrt(30))
    assert c.pairwise_agreement == pytest.approx(5.5 / 6)
    assert [s.rank for s in rep.subset("sub").configs] == [4, 2, 2, 1]


def test_top1_with_a_tie_for_best_agrees_if_the_reference_best_is_among_them() -> None:
    configs = CONFIGS[:4]
    res = rows("full", single([1.0, 2.0, 3.0, 4.0], configs)) + rows("sub", single([1.0, 2.0, 4.0, 4.0], configs))
    assert build_report("g", res).subset("sub").consistency.top1_agree is True
    res = rows("full", single([1.0, 2.0, 3.0, 4.0], configs)) + rows("sub", single([4.0, 4.0, 1.0, 2.0], configs))
    assert build_report("g", res).subset("sub").consistency.top1_agree is False


def test_lower_is_better_flips_ranks_and_top1_but_not_tau() -> None:
    sub = [0.2, 0.1, 0.3, 0.5, 0.4]
    res = rows("full", single(REF)) + rows("sub", single(sub))
    hi = build_report("g", res, top_k=2).subset("sub")
    lo = build_report("g", res, top_k=2, higher_is_better=False).subset("sub")
    assert lo.consistency.kendall_tau == pytest.approx(hi.consistency.kendall_tau)
    assert lo.consistency.top1_agree is False  # best (lowest): subset lr=0.2, reference lr=0.1
    assert [s.rank for s in lo.configs] == [2, 1, 3, 5, 4]


def test_helpers_on_plain_arrays() -> None:
    assert competition_ranks([3.0, 1.0, 3.0, 2.0]) == [1, 4, 1, 3]
    assert competition_ranks([3.0, 1.0, 3.0, 2.0], higher_is_better=False) == [3, 1, 3, 2]
    assert competition_ranks([2.0, 2.0, 2.0, 1.0]) == [1, 1, 1, 4]
    assert pairwise_agreement([1, 2], [2, 1]) == 0.0
    assert pairwise_agreement([1, 1], [1, 1]) == 0.5  # ties count half, even on both sides
    assert pairwise_agreement([1], [1]) is None


def test_vectorised_tau_b_equals_scipy_including_ties() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(50, 7)).astype(float)  # many ties
    y = rng.integers(0, 4, size=(50, 7)).astype(float)
    got = kendall_tau_b_rows(x, y)
    for row in range(50):
        want = kendalltau(x[row], y[row]).statistic
        assert (math.isnan(want) and math.isnan(got[row])) or got[row] == pytest.approx(want)


def noisy(seed: int, n_seeds: int = 4, noise: float = 0.03, n_configs: int = 10) -> list[JobResult]:
    """Configurations 0.02 apart, each seed's value off by N(0, noise), on the reference and a subset."""
    rng = np.random.default_rng(seed)
    res = []
    for subset in ("full", "sub"):
        res += rows(subset, {f"cfg{c:02d}": list(0.3 + 0.02 * c + rng.normal(0, noise, n_seeds))
                             for c in range(n_configs)})
    return res


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    res = noisy(0)
    a = build_report("g", res, bootstrap=500, seed=7).subset("sub").consistency
    b = build_report("g", res, bootstrap=500, seed=7).subset("sub").consistency
    assert a.kendall_tau_ci is not None
    low, high = a.kendall_tau_ci
    assert -1.0 <= low <= a.kendall_tau <= high <= 1.0
    assert high - low > 0.05  # the seeds' noise shows up as uncertainty
    assert a.kendall_tau_ci == b.kendall_tau_ci
    # the seed drives the resampling (few samples, so that the percentiles differ between draws)
    cis = {build_report("g", res, bootstrap=20, seed=s).subset("sub").consistency.kendall_tau_ci for s in range(5)}
    assert len(cis) > 1


def test_bootstrap_of_a_subset_does_not_depend_on_the_other_subsets() -> None:
    res = noisy(1)
    alone = build_report("g", res, bootstrap=200).subset("sub").consistency.kendall_tau_ci
    extra = [JobResult("aaa", r.config, r.config_key, r.seed, r.state, r.metrics) for r in res if r.subset == "sub"]
    with_other = build_report("g", extra + res, bootstrap=200).subset("sub").consistency.kendall_tau_ci
    assert alone == with_other


def test_one_seed_per_config_gives_a_degenerate_ci_with_a_note() -> None:
    res = rows("full", single(REF)) + rows("sub", single([0.2, 0.1, 0.3, 0.5, 0.4]))
    c = build_report("g", res).subset("sub").consistency
    assert c.kendall_tau_ci == pytest.approx((0.6, 0.6))
    assert any("one seed" in n for n in c.notes)


def test_fewer_than_three_common_configs_gives_none_with_reason() -> None:
    res = rows("full", single(REF)) + rows("sub", single([0.5, 0.4], CONFIGS[:2]))
    c = build_report("g", res).subset("sub").consistency
    assert c.kendall_tau is None and c.spearman_rho is None and c.kendall_tau_ci is None
    assert c.n_common == 2 and "only 2 configuration(s) in common" in c.undefined_reason
    assert c.pairwise_agreement == 0.0 and c.top1_agree is False  # still defined on 2 configurations
    assert c.top_k_overlap is None
    assert any("simclr[lr=0.5]" in n and "not compared" in n for n in c.notes)


def test_all_tied_subset_gives_none_with_reason() -> None:
    res = rows("full", single(REF)) + rows("sub", single([0.3] * 5))
    c = build_report("g", res).subset("sub").consistency
    assert c.kendall_tau is None and "ties on the subset" in c.undefined_reason
    assert c.pairwise_agreement == 0.5


def test_incomplete_grid_is_flagged_with_counts_and_failed_jobs() -> None:
    full = rows("full", {c: [m, m + 0.01] for c, m in zip(CONFIGS, REF, strict=True)})
    sub = rows("sub", {c: [m, m] for c, m in zip(CONFIGS[:3], REF[:3], strict=True)})
    sub += [JobResult("sub", CONFIGS[3], "key-" + CONFIGS[3], 0, "FAILED", {}),
            JobResult("sub", CONFIGS[3], "key-" + CONFIGS[3], 1, "RUNNING", {}),
            JobResult("sub", CONFIGS[4], "key-" + CONFIGS[4], 0, "PENDING", {}),
            JobResult("sub", CONFIGS[4], "key-" + CONFIGS[4], 1, "FAILED", {})]
    rep = build_report("g", full + sub)
    assert rep.complete is False and rep.jobs_total == 20 and rep.jobs_completed == 16
    assert rep.warning is not None and "16/20" in rep.warning and "provisional" in rep.warning
    assert "2 FAILED" in rep.warning and "1 RUNNING" in rep.warning and "1 PENDING" in rep.warning
    s = rep.subset("sub")
    assert (s.jobs_completed, s.jobs_total, s.provisional) == (6, 10, True)
    assert s.state_counts["FAILED"] == 2 and s.state_counts["RUNNING"] == 1
    assert [(f.config, f.seed) for f in s.failed] == [(CONFIGS[3], 0), (CONFIGS[4], 1)]
    assert any(w.startswith("sub: 2 FAILED") and f"{CONFIGS[4]} seed 1" in w for w in rep.warnings)
    assert rep.subset("full").provisional is False
    # statistics on the finished configurations only
    assert s.consistency.n_common == 3 and s.consistency.kendall_tau == pytest.approx(1.0)
    by = {c.config: c for c in s.configs}
    assert (by[CONFIGS[3]].n_done, by[CONFIGS[3]].n_expected, by[CONFIGS[3]].mean) == (0, 2, None)
    assert (by[CONFIGS[0]].n_done, by[CONFIGS[0]].n_expected) == (2, 2)


def test_complete_grid_has_no_warning() -> None:
    rep = build_report("g", rows("full", single(REF)) + rows("sub", single(REF)))
    assert rep.complete is True and rep.warning is None and rep.warnings == ()


def test_mean_std_cost_and_samples() -> None:
    full = rows("full", {CONFIGS[0]: [0.1, 0.3], CONFIGS[1]: [0.5, 0.5]}, time_s=100.0, samples=1000.0)
    sub = rows("sub", {CONFIGS[0]: [0.2, 0.2], CONFIGS[1]: [0.4, 0.6]}, time_s=10.0, samples=100.0)
    rep = build_report("g", full + sub)
    c0 = rep.subset("full").configs[0]
    assert c0.mean == pytest.approx(0.2) and c0.std == pytest.approx(math.sqrt(0.02))  # sample std
    s = rep.subset("sub")
    assert s.train_time_s == 40.0 and s.cost_ratio == pytest.approx(0.1) and s.cost_ratio_per_job == pytest.approx(0.1)
    assert s.num_train_samples == 100.0 and s.num_classes is None
    assert rep.subset("full").cost_ratio == 1.0


def test_subsets_sorted_reference_first_then_tau_desc_undefined_last() -> None:
    res = rows("full", single(REF)) + rows("bad", single(REF[::-1])) + rows("good", single(REF))
    res += rows("mid", single([0.2, 0.1, 0.3, 0.5, 0.4])) + rows("few", single([0.1], CONFIGS[:1]))
    assert [s.subset for s in build_report("g", res).subsets] == ["full", "good", "mid", "bad", "few"]


def test_bad_input_is_a_clear_error() -> None:
    res = rows("full", single(REF)) + rows("sub", single(REF))
    with pytest.raises(ValueError, match="reference: expected one of the grid's subsets \\(full, sub\\), got 'ful'"):
        build_report("g", res, reference="ful")
    with pytest.raises(ValueError, match="metric: no completed job has 'knn_top9' \\(have: knn_top1, train_time_s\\)"):
        build_report("g", res, metric="knn_top9")
    with pytest.raises(ValueError, match="top_k"):
        build_report("g", res, top_k=0)


def test_non_finite_metric_is_left_out_with_a_warning() -> None:
    res = rows("full", single(REF)) + rows("sub", single([0.1, 0.2, 0.3, 0.4, float("nan")]))
    rep = build_report("g", res)
    assert rep.subset("sub").consistency.n_common == 4
    assert any("without a finite 'knn_top1'" in w and "simclr[lr=0.5] seed 0" in w for w in rep.warnings)


def test_empty_grid_reports_no_jobs() -> None:
    rep = build_report("g", [])
    assert rep.subsets == () and rep.complete is False and "no jobs" in rep.warning


def test_json_round_trip_is_exact_and_strict() -> None:
    res = noisy(2) + [JobResult("sub", "extra", "key-extra", 0, "FAILED", {})]
    res += rows("tiny", single([0.1, 0.2], CONFIGS[:2]))
    rep = build_report("g", res, bootstrap=100)
    text = report_json(rep)
    assert "NaN" not in text  # None, never NaN (the serializer is strict)
    back = Report.from_dict(json.loads(text))
    assert back == rep
    assert back.subset("sub").consistency.kendall_tau_ci == rep.subset("sub").consistency.kendall_tau_ci
    assert back.subset("tiny").consistency.kendall_tau is None


def test_top_k_overlap_needs_more_configs_than_k() -> None:
    # with k = 3 of 3 configurations the overlap would be 1.0 whatever the order: undefined, not 1.0
    res = rows("full", single(REF[:3], CONFIGS[:3])) + rows("sub", single(REF[:3][::-1], CONFIGS[:3]))
    c = build_report("g", res, top_k=3).subset("sub").consistency
    assert c.top_k_overlap is None and any("top-3 overlap undefined" in n for n in c.notes)
    assert build_report("g", res, top_k=2).subset("sub").consistency.top_k_overlap == 0.5
