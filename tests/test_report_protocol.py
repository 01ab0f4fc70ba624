"""The report warns when it ranks results trained under different training-protocol versions
(specs/protocol.py), in every form (terminal, Markdown, HTML), and stays quiet when they share one."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from db import NewJob, Store
from orchestrator.cli import cli
from specs.protocol import PROTOCOL_METRIC, TRAINING_PROTOCOL, protocol_of


def _store(tmp_path: Path, old_jobs: set[str]) -> str:
    """A finished grid (2 subsets x 3 configs x 2 seeds); the jobs in ``old_jobs`` have no version (v1)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    spec = {"report": {"metric": "knn_top1", "reference": "full"}}
    gid = store.upsert_grid("g", json.dumps(spec), "spec-hash", str(tmp_path / "grid.toml"), 3)
    jobs = [NewJob(f"{sub}-{c}-{seed}", "{}", "simclr", f"key{c}", seed, str(tmp_path / "jobs" / f"{sub}{c}{seed}"),
                   sub, f"simclr[lr=0.{c + 1}]") for sub in ("full", "u5") for c in range(3) for seed in (0, 1)]
    store.add_jobs(gid, jobs)
    for j in jobs:
        metrics = {"knn_top1": 0.5 + 0.1 * int(j.job_hash.split("-")[1]) + 0.01 * j.seed}
        if j.job_hash not in old_jobs:
            metrics[PROTOCOL_METRIC] = float(TRAINING_PROTOCOL)
        store.complete(j.job_hash, None, metrics)
    return url


def _report(tmp_path: Path, url: str) -> tuple[str, str, str]:
    out = tmp_path / "rep"
    res = CliRunner().invoke(cli, ["report", "g", "--out", str(out), "--db", url], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split()), (out / "report.md").read_text(), (out / "report.html").read_text()


def test_a_report_mixing_protocol_versions_warns_in_every_form(tmp_path: Path) -> None:
    url = _store(tmp_path, old_jobs={"full-0-0", "full-1-0", "u5-2-1"})
    line = (f"results mix training-protocol versions (v1: 3 job(s), v{TRAINING_PROTOCOL}: 9 job(s); this code "
            f"trains v{TRAINING_PROTOCOL})")
    terminal, markdown, html = _report(tmp_path, url)
    assert line in terminal
    assert line in " ".join(markdown.split())
    assert line in " ".join(html.split())


def test_a_report_of_one_protocol_version_does_not_warn(tmp_path: Path) -> None:
    terminal, markdown, html = _report(tmp_path, _store(tmp_path, old_jobs=set()))
    for text in (terminal, markdown, html):
        assert "training-protocol" not in text
    assert protocol_of({}) == 1 and protocol_of({PROTOCOL_METRIC: 2.0}) == 2
