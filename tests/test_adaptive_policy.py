"""The adaptive policy (orchestrator/adaptive): honest confidence by simulation, and each decision of a look.

The simulation draws grids of configurations with a known true ranking plus per-seed noise (a shared
per-seed effect and each run's own), plays the policy on them (orchestrator/adaptive/replay.py) and counts
how often it recommends a subset whose TRUE ranking does not meet the criterion. Pure numpy: seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.adaptive.policy import (
    CANNOT,
    MEETS,
    STOP_BUDGET,
    STOP_DECIDED,
    STOP_LOOKS,
    STOP_REJECTED,
    STOP_SEEDS,
    UNDECIDED,
    LookInput,
    look_confidence,
    take_look,
)
from orchestrator.adaptive.replay import play
from orchestrator.adaptive.settings import AdaptiveSettings, parse_adaptive
from orchestrator.report.decision import Criterion, one_swap_tau
from orchestrator.report.ranking import JobResult
from specs.base import SpecError

CRIT = Criterion(min_tau=0.9, confidence=0.95, max_regret=0.01)
N_CONFIGS, GAP = 6, 0.02
SWAPPED = "swapped"  # true ranking: the reference's with one adjacent pair swapped (tau 0.867 < 0.9)


def true_means(subsets: tuple[str, ...]) -> dict[str, np.ndarray]:
    full = 0.5 + GAP * np.arange(N_CONFIGS)[::-1]
    out = {"full": full}
    for s in subsets:
        m = full.copy()
        if s == SWAPPED:
            m[2], m[3] = m[3], m[2]  # a swap in the middle: tau too low, regret 0
        out[s] = m
    return out


def draw(rng: np.random.Generator, subsets: tuple[str, ...], sigma: float, seeds: int = 6,
         cost: dict[str, float] | None = None) -> list[JobResult]:
    """One grid's results: every (subset, configuration, seed) with true mean + shared seed effect + noise."""
    cost = cost or {"full": 1.0, SWAPPED: 0.2, "exact": 0.5}
    rows = []
    for seed in range(seeds):
        shared = rng.normal(0, sigma)
        for sub, means in true_means(subsets).items():
            for c, mu in enumerate(means):
                rows.append(JobResult(sub, f"c{c}", f"k{c}", seed, "COMPLETED",
                                      {"knn_top1": float(mu + shared + rng.normal(0, sigma))},
                                      cost_hours=cost[sub], cost_unit="CPU-hours"))
    return rows


def test_the_swapped_subset_truly_misses_the_criterion() -> None:
    assert one_swap_tau(N_CONFIGS) == pytest.approx(0.8667, abs=1e-3)
    assert one_swap_tau(N_CONFIGS) < CRIT.min_tau


@pytest.mark.parametrize("subsets,sigma", [((SWAPPED,), 0.01), ((SWAPPED, "exact"), 0.012)])
def test_false_recommendations_stay_at_or_below_the_nominal_level(subsets: tuple[str, ...], sigma: float) -> None:
    settings = AdaptiveSettings(seeds_min=2, seeds_max=6)
    rng = np.random.default_rng(2026)
    reps, wrong, jobs = 100 // len(subsets), 0, 0
    for k in range(reps):
        r = play(draw(rng, subsets, sigma), settings, LookInput(CRIT, bootstrap=200, seed=k))
        wrong += r.recommended == SWAPPED
        jobs += r.jobs
    assert wrong / reps <= 1 - CRIT.confidence, f"{wrong}/{reps} recommendations of a subset that misses"
    assert jobs / reps < len(draw(rng, subsets, sigma))  # it stopped early on average


def test_a_clear_answer_is_found_with_fewer_jobs() -> None:
    rng = np.random.default_rng(7)
    settings = AdaptiveSettings(seeds_min=2, seeds_max=6)
    found = [play(draw(rng, (SWAPPED, "exact"), 0.004), settings, LookInput(CRIT, bootstrap=200, seed=k))
             for k in range(10)]
    assert all(r.recommended == "exact" and r.stop == STOP_DECIDED for r in found)
    assert all(r.jobs < r.jobs_total / 2 and r.hours < r.hours_total for r in found)


# ---------------------------------------------------------------------------------------------------------
# one look, each decision


def results(rng: np.random.Generator, sigma: float, seeds: int, subsets: tuple[str, ...] = ("exact",),
            cost: dict[str, float] | None = None) -> list[JobResult]:
    return draw(rng, subsets, sigma, seeds, cost)


def test_bonferroni_over_the_looks() -> None:
    assert look_confidence(CRIT, AdaptiveSettings(seeds_min=2, seeds_max=6)) == pytest.approx(1 - 0.05 / 5)
    assert look_confidence(CRIT, AdaptiveSettings(seeds_min=2, seeds_max=6, looks=2)) == pytest.approx(0.975)


def test_meets_and_nothing_cheaper_undecided_stops_decided() -> None:
    look = take_look(results(np.random.default_rng(0), 0.002, 3), AdaptiveSettings(2, 6), LookInput(CRIT), number=1)
    assert [(j.subset, j.state) for j in look.judgements] == [("exact", MEETS)]
    assert look.stop == STOP_DECIDED and look.recommended == "exact" and not look.add


def test_two_seeds_never_drop_a_subset() -> None:
    """The percentile bootstrap over two seeds has three distinct replicates: far too narrow to drop on."""
    look = take_look(results(np.random.default_rng(4), 0.05, 2), AdaptiveSettings(2, 6), LookInput(CRIT), number=1)
    assert look.judgements[0].state == UNDECIDED and "seeds" in look.judgements[0].why and not look.drop


def test_cannot_meet_is_dropped_and_all_rejected_stops() -> None:
    look = take_look(results(np.random.default_rng(0), 0.002, 3, (SWAPPED,)), AdaptiveSettings(2, 6),
                     LookInput(CRIT), number=1)
    assert look.judgements[0].state == CANNOT and "upper bound" in look.judgements[0].why
    assert look.drop == (SWAPPED,) and look.stop == STOP_REJECTED and look.recommended is None


def test_undecided_adds_seeds_only_where_the_order_is_uncertain() -> None:
    rows = results(np.random.default_rng(3), 0.0005, 3)
    # make configurations c4 and c5 of the subset nearly tie, with seeds that disagree on their order
    rows = [JobResult(r.subset, r.config, r.config_key, r.seed, r.state,
                      {"knn_top1": 0.3 + (0.01 if (r.seed == 0) == (r.config == "c4") else 0.0)},
                      cost_hours=r.cost_hours, cost_unit=r.cost_unit)
            if r.subset == "exact" and r.config in ("c4", "c5") else r for r in rows]
    look = take_look(rows, AdaptiveSettings(2, 6), LookInput(CRIT), number=1)
    assert look.judgements[0].state == UNDECIDED and look.stop is None
    assert {(a.subset, a.config) for a in look.add} == {("exact", "c4"), ("exact", "c5")}


def test_a_meeting_subset_waits_for_a_cheaper_undecided_one() -> None:
    rng = np.random.default_rng(1)
    rows = results(rng, 0.002, 3, ("exact",), {"full": 1.0, "exact": 0.5})
    cheap = [JobResult("cheap", r.config, r.config_key, r.seed, r.state,
                       {"knn_top1": float(rng.normal(0.5, 0.05))}, cost_hours=0.1, cost_unit=r.cost_unit)
             for r in rows if r.subset == "full"]
    look = take_look(rows + cheap, AdaptiveSettings(2, 6), LookInput(CRIT), number=1)
    states = {j.subset: j.state for j in look.judgements}
    if states["cheap"] == UNDECIDED:  # noise may also rule it out at once; then the study is decided
        assert look.stop is None and look.recommended == "exact"
        assert {a.subset for a in look.add} <= {"cheap", "full"} and look.add
    else:
        assert states["cheap"] == CANNOT and look.stop == STOP_DECIDED


def test_budget_looks_and_seeds_max_stop_the_study() -> None:
    rows = results(np.random.default_rng(4), 0.05, 2)  # noisy, two seeds: undecided (a drop needs 3 seeds)
    inp = LookInput(CRIT)
    assert take_look(rows, AdaptiveSettings(2, 6), inp, number=1).stop is None
    assert take_look(rows, AdaptiveSettings(2, 6, budget_hours=10), inp, number=1).stop == STOP_BUDGET
    assert take_look(rows, AdaptiveSettings(2, 6), inp, number=5).stop == STOP_LOOKS
    assert take_look(rows, AdaptiveSettings(2, 2, looks=3), inp, number=1).stop == STOP_SEEDS


@pytest.mark.parametrize("table,message", [
    ({"seeds_min": 0}, "adaptive.seeds_min: expected"),
    ({"seeds_min": 3, "seeds_max": 2}, "adaptive.seeds_max: expected an integer >= seeds_min (3)"),
    ({"seeds_max": 9}, "adaptive.seeds_max: expected at most the number of seeds every method lists (6)"),
    ({"budget_hours": -1}, "adaptive.budget_hours: expected"),
    ({"alpha": 0.1}, "adaptive.alpha: expected one of"),
])
def test_bad_tables_are_one_line_errors(table: dict, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_adaptive(table, [6, 8], 0.95)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_settings_defaults_and_point_criteria_are_refused() -> None:
    s = parse_adaptive({"seeds_min": 2}, [5, 6], 0.95)
    assert (s.seeds_min, s.seeds_max, s.max_looks) == (2, 5, 4)
    with pytest.raises(SpecError, match="confidence > 0"):
        parse_adaptive({}, [5], 0.0)


def test_a_look_round_trips_through_its_json() -> None:
    from orchestrator.adaptive.controller import look_from_json, look_to_json

    rows = results(np.random.default_rng(3), 0.05, 3, (SWAPPED, "exact"))
    look = take_look(rows, AdaptiveSettings(2, 6), LookInput(CRIT), number=1)
    assert look_from_json(look_to_json(look)) == look
