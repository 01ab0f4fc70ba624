"""Gather a grid's results from the store for the report (one query for jobs, one for metrics)."""

from __future__ import annotations

import json
from typing import Any

from db import Store
from orchestrator.report.ranking import JobResult
from specs.lottery import parse_label


def grid_results(store: Store, grid_name: str) -> list[JobResult]:
    """Every job of the grid with its state and final metrics."""
    metrics = store.final_metrics(grid_name)
    return [
        JobResult(subset=j.subset_name, config=j.config_name, config_key=j.config_key, seed=j.seed,
                  state=j.state, metrics=metrics.get(j.job_hash, {}))
        for j in store.jobs(grid_name)
        if parse_label(j.config_name) is None  # lottery jobs have a section of their own
    ]


def report_settings(store: Store, grid_name: str) -> dict[str, Any]:
    """The grid's ``[report]`` table (metric, reference, top_k, higher_is_better) as recorded at launch."""
    g = store.get_grid(grid_name)
    raw = json.loads(g.spec_json) if g else {}
    rep = raw.get("report", {})
    return {"metric": rep.get("metric", "knn_top1"), "reference": rep.get("reference", "full"),
            "top_k": int(rep.get("top_k", 3)), "higher_is_better": bool(rep.get("higher_is_better", True))}
