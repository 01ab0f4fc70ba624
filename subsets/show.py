"""What ``dlth-orch subsets show`` reports about each subset: JSON-ready dicts, no rendering."""

from __future__ import annotations

from typing import Any

from subsets.base import COMMON_KEYS
from subsets.meta import DatasetMeta
from subsets.registry import get_strategy
from subsets.resolve import resolve


def subset_report(name: str, table: dict[str, Any], meta: DatasetMeta) -> dict[str, Any]:
    """Size, classes (with names), hash and strategy-specific facts of one subset table."""
    manifest = resolve(name, table, meta)
    out = manifest.summary(meta)
    own = {k: v for k, v in manifest.params.items() if k not in COMMON_KEYS}
    out["details"] = get_strategy(manifest.strategy).describe(own, meta)
    out["fraction_of_classes"] = round(manifest.num_classes / max(1, meta.num_classes), 6)
    return out


def dataset_summary(meta: DatasetMeta) -> dict[str, Any]:
    """The dataset's totals, for the head of the report."""
    return {
        "root": str(meta.root),
        "name": meta.name,
        "fingerprint": meta.fingerprint,
        "num_classes": meta.num_classes,
        "num_samples": {s: int(len(v)) for s, v in meta.labels.items()},
    }


def subsets_report(tables: dict[str, dict[str, Any]], meta: DatasetMeta) -> dict[str, Any]:
    """:func:`subset_report` for every table, with the dataset's totals."""
    return {
        "dataset": dataset_summary(meta),
        "subsets": {name: subset_report(name, table, meta) for name, table in tables.items()},
    }
