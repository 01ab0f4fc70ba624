"""The adaptive policy played on results that are all known already (a finished grid, or a simulation):
each (subset, configuration) reveals its first ``seeds_min`` seeds, in seed order, then one more seed
each time a look asks for it; dropped subsets reveal nothing more."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from db import JobState, Store
from orchestrator.adaptive.policy import Look, LookInput, take_look
from orchestrator.adaptive.settings import AdaptiveSettings, parse_adaptive
from orchestrator.report.ranking import JobResult
from specs.base import SpecError


@dataclass(frozen=True)
class Replay:
    """What the adaptive study would have run and decided."""

    looks: tuple[Look, ...]
    ran: tuple[JobResult, ...]  # the jobs it would have run
    jobs_total: int  # jobs of the full grid
    hours_total: float  # device-hours of the full grid
    recommended: str | None

    @property
    def jobs(self) -> int:
        """Jobs it would have run."""
        return len(self.ran)

    @property
    def hours(self) -> float:
        """Device-hours of the jobs it would have run."""
        return sum(r.cost_hours or 0.0 for r in self.ran)

    @property
    def stop(self) -> str | None:
        """Why it stopped."""
        return self.looks[-1].stop if self.looks else None


def play(results: Sequence[JobResult], settings: AdaptiveSettings, inp: LookInput) -> Replay:
    """Play the policy on ``results`` (every job of a grid, with its seeds in the order they would run)."""
    pairs: dict[tuple[str, str], list[JobResult]] = {}
    for r in sorted(results, key=lambda r: r.seed):
        pairs.setdefault((r.subset, r.config_key), []).append(r)
    shown = {k: min(settings.seeds_min, len(v)) for k, v in pairs.items()}
    dropped: list[str] = []
    looks: list[Look] = []
    while True:
        visible = [r for k, rows in pairs.items() for r in rows[:shown[k]]]
        look = take_look(visible, settings, inp, number=len(looks) + 1, dropped=dropped)
        looks.append(look)
        dropped += look.drop
        if look.stop is not None:
            break
        for a in look.add:
            key = (a.subset, a.config_key)
            shown[key] = min(shown[key] + 1, len(pairs[key]))
    ran = [r for k, rows in pairs.items() for r in rows[:shown[k]]]
    return Replay(looks=tuple(looks), ran=tuple(ran), jobs_total=len(results),
                  hours_total=sum(r.cost_hours or 0.0 for r in results),
                  recommended=looks[-1].recommended if looks[-1].stop == "decided" else None)


def median_cost_share(ran: Sequence[JobResult], results: Sequence[JobResult]) -> float | None:
    """The share of the grid's device-hours that ``ran`` takes when every job costs its (subset,
    configuration)'s median recorded job: a job's work does not depend on its seed, but its recorded
    wall-clock does depend on what else the machine ran at the time. None without recorded costs."""
    by_pair: dict[tuple[str, str], list[float]] = {}
    for r in results:
        by_pair.setdefault((r.subset, r.config_key), []).append(r.cost_hours or 0.0)
    median = {k: float(np.median(v)) for k, v in by_pair.items()}
    total = sum(median[(r.subset, r.config_key)] for r in results)
    return sum(median[(r.subset, r.config_key)] for r in ran) / total if total else None


def replay_settings(raw: dict[str, Any], seeds: int, seeds_min: int | None) -> AdaptiveSettings:
    """The grid's ``[adaptive]`` table (if any) for a replay over ``seeds`` seeds per (subset, configuration),
    with ``seeds_min`` overriding; ValueError (one line) when it does not fit."""
    table = {k: v for k, v in dict(raw.get("adaptive") or {}).items() if k != "seeds_max"}
    if seeds_min is not None:
        table["seeds_min"] = seeds_min
    confidence = float((raw.get("report") or {}).get("confidence", 0.95))
    try:
        return parse_adaptive({**table, "seeds_max": seeds}, [seeds], confidence)
    except SpecError as exc:
        raise ValueError(f"replay: {exc} (the grid has {seeds} seeds per (subset, configuration))") from None


def replay_grid(store: Store, grid_name: str, seeds_min: int | None = None) -> list[str]:
    """``dlth-orch replay GRID --adaptive``: the lines it prints. ValueError on a grid it cannot replay."""
    from orchestrator.adaptive.controller import look_input
    from orchestrator.results import ReportRequest, assemble_report, grid_results

    rows = grid_results(store, grid_name)
    done = [r for r in rows if r.state == JobState.COMPLETED]
    if not rows or len(done) < len(rows):
        raise ValueError(f"replay: grid {grid_name!r}: expected a finished grid ({len(done)}/{len(rows)} jobs "
                         "completed)")
    g = store.get_grid(grid_name)
    raw = json.loads(g.spec_json) if g else {}
    seeds = min(Counter((r.subset, r.config_key) for r in rows).values())
    settings = replay_settings(raw, seeds, seeds_min)
    r = play(rows, settings, look_input(store, grid_name))
    full = assemble_report(store, ReportRequest(grids=[grid_name])).decision
    unit = next((x.cost_unit for x in rows if x.cost_unit), "device-hours")
    same = full is not None and full.recommended == r.recommended
    full_says = (full.recommended or f"no recommendation ({full.status})") if full else "no decision"
    share = f" ({r.hours / r.hours_total:.0%})" if r.hours_total else ""
    steady = median_cost_share(r.ran, rows)
    at_median = f"; {steady:.0%} with every job at its (subset, configuration)'s median cost" if steady else ""
    return [*(look.summary() for look in r.looks),
            f"adaptive (seeds_min {settings.seeds_min}, seeds_max {settings.seeds_max}): {r.jobs} of "
            f"{r.jobs_total} jobs, {r.hours:.3g} of {r.hours_total:.3g} {unit} recorded{share}{at_median}",
            f"stopped: {r.stop}; recommends {r.recommended or 'nothing'}; the full grid: {full_says}",
            f"same decision as the full grid: {'yes' if same else 'no'}"]
