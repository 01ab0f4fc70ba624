"""The typed grid: what a validated grid file is (:class:`GridSpec` and its parts) and what it expands to
(:class:`ExpandedJob`). Plain frozen dataclasses; the validators that build them live in ``validate*.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.adaptive.settings import AdaptiveSettings
from specs.base import stable_hash
from specs.job import EvalConfig, JobSpec, Resources
from subsets.ticket import TicketSource


@dataclass(frozen=True)
class ReportConfig:
    """The grid's ``[report]`` table."""

    metric: str = "knn_top1"
    reference: str = "full"
    top_k: int = field(default=3, metadata={"min": 1})
    higher_is_better: bool = True
    # the recommendation's criterion (see orchestrator/report/decision.py)
    min_tau: float = field(default=0.8, metadata={"min": -1.0, "max": 1.0})
    confidence: float = field(default=0.95, metadata={"min": 0.0, "max": 0.999})
    max_regret: float = field(default=0.01, metadata={"min": 0.0})
    # rewrite the report files each time this many more jobs have completed while the grid runs (0: only at the end)
    every: int = field(default=0, metadata={"min": 0})
    # where `dlth-orch report` writes its files without --out (relative to the grid file; "": print only)
    out: str = ""


@dataclass(frozen=True)
class InitTable:
    """A validated ``init`` table: ``parent`` (a method table name) or ``file`` (absolute), not both
    (``orchestrator/grid/validate_init.py``)."""

    parent: str | None
    file: str | None
    sha256: str | None
    checkpoint: str
    exclude: tuple[str, ...]
    strict: bool

    def spec_init(self, parent_hash: str | None = None, parent_config: str | None = None) -> dict[str, Any]:
        """The ``JobSpec.init`` of a job (with its parent's hash and configuration key for ``from``)."""
        common = {"exclude": list(self.exclude), "strict": self.strict}
        if self.parent is not None:
            return {"job": parent_hash, "config": parent_config, "checkpoint": self.checkpoint, **common}
        return {"file": self.file, "sha256": self.sha256, **common}


@dataclass(frozen=True)
class MethodTable:
    """One ``[methods.NAME]`` table: fixed values, swept values (lists) and zip groups."""

    name: str
    method: str
    fixed: dict[str, Any]
    sweeps: dict[str, list[Any]]
    zips: list[list[str]]
    seeds: list[int]
    resources: Resources
    init: InitTable | None = None  # where its initial weights come from (None: from scratch)


@dataclass(frozen=True)
class LotterySetting:
    """One validated ``[lottery.NAME]`` table (``orchestrator/grid/validate_lottery.py``)."""

    name: str
    generate: str
    subset: str
    levels: int
    prune_fraction: float
    strategy: str
    rewind: str
    start: dict[str, Any] | None  # None: scratch; {"file", "sha256"}; {"from": table, "subset": name}
    evaluate_method: str
    evaluate_subset: str
    baselines: tuple[str, ...]
    prunable: tuple[str, ...]
    not_prunable: tuple[str, ...]
    seeds: list[int]
    metric: str


@dataclass(frozen=True)
class LotteryGrid:
    """The lottery part of a grid: its settings and the method tables that only serve them."""

    settings: dict[str, LotterySetting] = field(default_factory=dict)
    template_only: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GridSpec:
    """A validated grid file."""

    path: Path
    name: str
    dataset_root: str
    dataset_prepare: str | None
    seeds: list[int]
    failure_budget: int
    train: dict[str, Any]
    eval: EvalConfig
    resources: Resources
    report: ReportConfig
    cluster: dict[str, Any]
    subsets: dict[str, dict[str, Any]]
    methods: dict[str, MethodTable]
    raw: dict[str, Any] = field(repr=False)
    lottery: LotteryGrid = field(default_factory=LotteryGrid)  # [lottery.NAME] tables
    dataset_limits: dict[str, int] = field(default_factory=dict)
    adaptive: AdaptiveSettings | None = None  # [adaptive] (orchestrator/adaptive); never in a job's identity
    # strategy = "ticket" subsets, once taken (orchestrator/grid/ticket.py): where each came from
    tickets: dict[str, TicketSource] = field(default_factory=dict)
    # subsets that run only the configurations a ticket's audit chose (the reference a ticket grid lacks)
    audit_only: frozenset[str] = frozenset()

    @property
    def audited(self) -> bool:
        """A ticket of the grid is audited (``audit`` > 0): a step chooses what also runs on the reference."""
        return any(t.audit for t in self.tickets.values())

    @property
    def spec_hash(self) -> str:
        """The hash of the grid file's tables."""
        return stable_hash(self.raw)

    def to_json(self) -> str:
        """The grid file's tables as canonical JSON (with its tickets' sources, when it has tickets)."""
        doc = {**self.raw, "tickets": {n: t.to_dict() for n, t in self.tickets.items()}} if self.tickets else self.raw
        return json.dumps(doc, sort_keys=True, default=str)


@dataclass(frozen=True)
class ExpandedJob:
    """A job spec with the grid's labels for it."""

    spec: JobSpec
    subset_name: str
    config_name: str
