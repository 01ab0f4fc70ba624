"""The adaptive policy played on results that are all known already (a finished grid, or a simulation):
each (subset, configuration) reveals its first ``seeds_min`` seeds, in seed order, then one more seed
each time a look asks for it; dropped subsets reveal nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.adaptive.policy import Look, LookInput, take_look
from orchestrator.adaptive.settings import AdaptiveSettings
from orchestrator.report.ranking import JobResult


@dataclass(frozen=True)
class Replay:
    """What the adaptive study would have run and decided."""

    looks: tuple[Look, ...]
    jobs: int  # jobs it would have run
    jobs_total: int  # jobs of the full grid
    hours: float  # device-hours of the jobs it would have run
    hours_total: float  # device-hours of the full grid
    recommended: str | None

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
    return Replay(looks=tuple(looks), jobs=len(ran), jobs_total=len(results),
                  hours=sum(r.cost_hours or 0.0 for r in ran), hours_total=sum(r.cost_hours or 0.0 for r in results),
                  recommended=looks[-1].recommended if looks[-1].stop == "decided" else None)
