"""The adaptive controller: the policy's looks run against the database and a backend.

A *step* (:func:`step`, the caller holds the grid's lock, :func:`orchestrator.launch.holding_grid`):

1. record the jobs every recorded look asked for (idempotent: after a crash between recording a look and
   its jobs, the jobs are recorded now),
2. if the study has stopped, or a job of the grid is still waiting/pending/queued/running: nothing more,
3. otherwise take the next look (:func:`orchestrator.adaptive.policy.take_look`) on the grid's results,
   record it (``adaptive_looks``, once per number), record the jobs it adds and cancel the unfinished jobs
   of the subsets it drops (through each job's backend's cancel path).

Looks are taken at round boundaries (the grid idle), so each round of added seeds is one look and the
number of looks stays bounded (``[adaptive] looks``). ``launch --wait`` steps after each round the backend
ran (:func:`run_rounds`); ``dlth-orch advance GRID`` takes one step (safe from cron or after a crash).
Which seeds a (subset, configuration) runs: the first ``seeds_min`` of its method's seed list, then the
next one per look that added it; job identities are those of the same grid without ``[adaptive]``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from db import JobRow, JobState, Store
from orchestrator.adaptive.policy import Addition, Judgement, Look, LookInput, take_look

if TYPE_CHECKING:
    from orchestrator.grid import ExpandedJob, GridSpec

log = logging.getLogger(__name__)
IDLE_UNLESS = (JobState.WAITING, JobState.PENDING, JobState.QUEUED, JobState.RUNNING)


def look_to_json(look: Look) -> str:
    """A look as JSON (the ``adaptive_looks.look_json`` column)."""
    return json.dumps(asdict(look), sort_keys=True)


def look_from_json(text: str) -> Look:
    """Inverse of :func:`look_to_json`."""
    d = json.loads(text)
    return Look(**{**d, "judgements": tuple(Judgement(**j) for j in d["judgements"]),
                   "add": tuple(Addition(**a) for a in d["add"]), "drop": tuple(d["drop"])})


def recorded_looks(store: Store, grid_name: str) -> list[Look]:
    """The grid's looks so far, first first."""
    return [look_from_json(r.look_json) for r in store.looks(grid_name)]


def select_jobs(grid: GridSpec, jobs: Sequence[ExpandedJob], looks: Sequence[Look]) -> list[ExpandedJob]:
    """The jobs an adaptive grid runs so far: per (subset, configuration) the first ``seeds_min`` seeds plus
    one per look that added it, in the order of the method's seed list. Every job without ``[adaptive]``."""
    if grid.adaptive is None:
        return list(jobs)
    extra = Counter((a.subset, a.config_key) for look in looks for a in look.add)
    order = {name: {s: i for i, s in enumerate(mt.seeds)} for name, mt in grid.methods.items()}
    rank = {ej.spec.job_hash: order.get(ej.config_name.split("[")[0].split("@")[0], {}).get(ej.spec.seed, ej.spec.seed)
            for ej in jobs}
    taken: Counter[tuple[str, str]] = Counter()
    out = []
    for ej in sorted(jobs, key=lambda ej: rank[ej.spec.job_hash]):
        key = (ej.subset_name, ej.spec.config_key)
        if taken[key] < grid.adaptive.seeds_min + extra[key]:
            taken[key] += 1
            out.append(ej)
    keep = {ej.spec.job_hash for ej in out}
    return [ej for ej in jobs if ej.spec.job_hash in keep]


def adaptive_jobs(store: Store, grid: GridSpec, jobs: Sequence[ExpandedJob]) -> list[ExpandedJob]:
    """:func:`select_jobs` with the looks recorded in ``store``, then a ticket's audit
    (:func:`orchestrator.adaptive.audit.audit_jobs`): the launch pipeline's one hook."""
    from orchestrator.adaptive.audit import audit_jobs

    return audit_jobs(store, grid, select_jobs(grid, jobs, recorded_looks(store, grid.name) if grid.adaptive else ()))


def look_input(store: Store, grid_name: str) -> LookInput:
    """The grid's ``[report]`` settings as the policy needs them."""
    from orchestrator.results import report_settings

    rs = report_settings(store, grid_name)
    return LookInput(criterion=rs["criterion"], reference=rs["reference"], metric=rs["metric"],
                     higher_is_better=rs["higher_is_better"])


@dataclass(frozen=True)
class Step:
    """What one step did: the look it took (None: none was due) and why not, and the jobs it cancelled."""

    look: Look | None
    message: str
    cancelled: int = 0
    added: bool = False  # a ticket's audit chose: its jobs are to run

    @property
    def goes_on(self) -> bool:
        """There is more to run after this step (the look added seeds, or the audit chose)."""
        return self.added or self.look is not None and self.look.stop is None

    @property
    def stopped(self) -> bool:
        """The study is over (this step's look or an earlier one stopped it)."""
        return self.look is not None and self.look.stop is not None or self.message.startswith("stopped")


def point_added_jobs(store: Store, grid_name: str) -> None:
    """Jobs a look or an audit added run the code the grid was launched with (the snapshot of its last launch),
    never whatever the repository holds when they start; a grid launched before snapshots keeps none."""
    launches = store.launches(grid_name)
    if launches:
        store.point_code(grid_name, launches[-1].code_hash, repoint=False)


def step(store: Store, grid: GridSpec, record_jobs: Callable[[], object]) -> Step:
    """One step of the controller for ``grid`` (adaptive, or with an audited ticket; the caller holds its lock).
    ``record_jobs`` records the grid's jobs (:func:`orchestrator.launch.record_grid`, which applies
    :func:`adaptive_jobs`); the jobs it adds run the grid's frozen code (:func:`point_added_jobs`)."""

    def record() -> None:
        record_jobs()
        point_added_jobs(store, grid.name)

    if grid.adaptive is None:  # a ticket's audit (a grid never has both: orchestrator/grid/validate_ticket.py)
        from orchestrator.adaptive.audit import audit_step

        message, added = audit_step(store, grid, record)
        return Step(None, message, added=added)
    record()
    looks = recorded_looks(store, grid.name)
    if looks and looks[-1].stop is not None:
        return Step(None, f"stopped at look {looks[-1].number}: {looks[-1].stop}")
    busy = store.jobs(grid.name, IDLE_UNLESS)
    if busy:
        return Step(None, f"waiting for {len(busy)} jobs of look {len(looks) + 1}")
    from orchestrator.results import grid_results

    dropped = [s for look in looks for s in look.drop]
    look = take_look(grid_results(store, grid.name), grid.adaptive, look_input(store, grid.name),
                     number=len(looks) + 1, dropped=dropped)
    if not store.record_look(grid.name, look.number, look_to_json(look), look.stop):
        return Step(None, f"look {look.number} was taken by another controller")
    log.info("%s: %s", grid.name, look.summary())
    record()
    return Step(look, look.summary(), cancel_subsets(store, grid.name, look.drop))


def cancel_subsets(store: Store, grid_name: str, subsets: Sequence[str]) -> int:
    """Cancel the unfinished jobs of ``subsets`` through each job's backend (the ``cancel`` command's path)."""
    if not subsets:
        return 0
    from orchestrator.backends.registry import get_backend

    by_backend: dict[str, list[JobRow]] = {}
    for j in store.jobs(grid_name, JobState.CANCELLABLE):
        if j.subset_name in subsets:
            by_backend.setdefault(j.backend or "local", []).append(j)
    return sum(get_backend(b).cancel(store, js) for b, js in by_backend.items())


def run_rounds(store: Store, grid: GridSpec, record: Callable[[], object],
               submit: Callable[[list[JobRow]], None], runnable: Callable[[], list[JobRow]],
               say: Callable[[str], Any]) -> Step:
    """``launch --wait``'s adaptive loop: after each round the backend ran to the end, step; submit (and
    wait for) the jobs the look added; until the study stops or no look is due."""
    while True:
        st = step(store, grid, record)
        say(f"adaptive: {st.message}")
        if not st.goes_on:
            return st
        submit(runnable())
