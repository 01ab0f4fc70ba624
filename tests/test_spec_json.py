"""A job's ``job.json`` text, configuration key and identity are built from pieces encoded once per shared
configuration object (:func:`specs.base.sorted_json`): they must equal, character for character, what the
one-call definitions give (``json.dumps(..., sort_keys=True)`` of the whole, :func:`stable_hash` of the
identity) for every kind of job: plain, ``init.from`` children, lottery chains and their baselines."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.grid import expand, load_grid
from specs.base import sorted_json, stable_hash
from specs.job import JobSpec
from subsets import DatasetMeta

from .test_grid_validation import write
from .test_job_graph import GRAPH

REPO = Path(__file__).resolve().parents[1]


def _reference_json(spec: JobSpec) -> str:
    doc = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    for key in ("train", "eval", "resources"):
        doc[key] = doc[key].plain
    return json.dumps(doc, sort_keys=True)


def _reference_hash(spec: JobSpec) -> str:
    ident: dict[str, Any] = {**spec.config_identity(), "dataset": spec.dataset_fingerprint,
                             "manifest": spec.manifest_hash, "seed": spec.seed}
    if spec.depends_on:
        ident["parents"] = sorted(spec.depends_on)
    if spec.init is not None:
        ident["init"] = spec.init
    if spec.lottery is not None:
        ident["lottery"] = spec.lottery
    return stable_hash(ident, 16)


def _lottery_grid(tmp_path: Path) -> Path:
    text = (REPO / "examples" / "lottery_digits.toml").read_text()
    path = tmp_path / "lottery.toml"
    path.write_text(text.replace('root = "../data/digits"', 'root = "ds"').replace('prepare = "digits"', ""))
    return path


@pytest.mark.parametrize("grid", ["graph", "lottery"])
def test_job_text_key_and_identity_equal_their_one_call_definitions(grid: str, tmp_path: Path,
                                                                     meta_dir: Path) -> None:
    path = write(tmp_path, GRAPH) if grid == "graph" else _lottery_grid(tmp_path)
    jobs = expand(load_grid(path), DatasetMeta.load(meta_dir))
    kinds = {(ej.spec.init is not None, ej.spec.lottery is not None, bool(ej.spec.depends_on)) for ej in jobs}
    assert len(kinds) >= 2  # plain jobs and children (graph); chains with and without parents (lottery)
    for ej in jobs:
        spec = ej.spec
        assert spec.to_json() == _reference_json(spec)
        assert spec.config_key == stable_hash(spec.config_identity(), 12)
        assert spec.job_hash == _reference_hash(spec)
        assert JobSpec.from_json(spec.to_json()).job_hash == spec.job_hash


@pytest.mark.parametrize("compact", [False, True])
def test_sorted_json_splices_encoded_parts_where_json_dumps_would_put_them(compact: bool) -> None:
    doc = {"b": [1, 2.5, None], "a": {"z": "é", "y": [True]}, "d": 3, "c": "x\"y", "e": {}, "f": "\u00e9",
           "g": True, "h": (), "i": [], "j": 1.5, "k": -3, "m": None, "n": ("p", 2), "o": Path("/x")}
    dumps = (lambda o: json.dumps(o, sort_keys=True, separators=(",", ":"), default=str)) if compact else (
        lambda o: json.dumps(o, sort_keys=True))
    if not compact:
        del doc["o"]  # only the identities' encoder writes unknown types (as str)
    for shared in ([], ["a"], ["c"], ["a", "f"], ["b", "c", "d"], list(doc)):
        values = {k: v for k, v in doc.items() if k not in shared}
        encoded = {k: dumps(doc[k]) for k in shared}
        assert sorted_json(values, encoded, compact=compact) == dumps(doc), shared
