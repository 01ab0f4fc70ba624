"""``dlth-orch db upgrade``, ``dlth-orch db current`` and ``dlth-orch export`` (on SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db import FINAL_EPOCH, AttemptState, NewJob, Store
from db.engine import make_engine
from db.migrate import BASE_REVISION, HEAD, current, upgrade
from db.testing import db_url  # noqa: F401  (fixture: a fresh database on each backend)
from orchestrator.cli import cli, main


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_db_current_and_upgrade(db_url: str) -> None:  # noqa: F811
    engine = make_engine(db_url)
    upgrade(engine, BASE_REVISION)
    code, out = invoke("--db", db_url, "db", "current", "--check")
    assert code == 1 and f"revision {BASE_REVISION};" in out and "run `dlth-orch db upgrade`" in out
    code, out = invoke("db", "upgrade", "--db", db_url)  # --db after the command works too
    assert code == 0 and f"upgraded {BASE_REVISION} -> {HEAD}" in out
    assert current(engine).revision == HEAD
    code, out = invoke("--db", db_url, "db", "upgrade")
    assert code == 0 and f"already at revision {HEAD}" in out
    code, out = invoke("--db", db_url, "db", "current", "--check")
    assert code == 0 and "up to date" in out
    password = make_url(db_url).password
    assert not password or f":{password}@" not in out  # the password is never printed
    engine.dispose()


def test_db_commands_refuse_bad_urls_with_exit_code_2(tmp_path: Path) -> None:
    code, out = invoke("--db", "oracle://x/y", "db", "upgrade")
    assert code == 2 and "got 'oracle'" in out
    code, out = invoke("--db", f"sqlite:///{tmp_path / 'none.db'}", "db", "current")
    assert code == 2 and "no such file" in out
    junk = tmp_path / "junk.db"
    junk.write_text("id,name\n1,a\n")
    code, out = invoke("--db", f"sqlite:///{junk}", "export", "g", "--out", str(tmp_path / "x"))
    assert code == 2 and "not a SQLite database" in out
    code, out = invoke("--db", f"sqlite:///{tmp_path / 'ok.db'}", "db", "upgrade", "--revision", "0042")
    assert code == 2 and "--revision" in out


def test_reading_commands_never_create_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """status, report, export, retry, cancel and slurm jobs on a missing SQLite file: one line, exit 2, no file."""
    missing = tmp_path / "here" / "dlth.db"
    url = f"sqlite:///{missing}"
    for args in (["status"], ["report"], ["export", "g", "--out", str(tmp_path / "x")], ["retry"],
                 ["cancel", "--yes"], ["slurm", "jobs"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--db", url, *args])  # the console script: usage errors become one line and exit code 2
        out = capsys.readouterr().err
        assert exit_info.value.code == 2, (args, out)
        assert out.strip() == f"error: database {missing}: no such file (launch a grid first, or name the " \
                              "database with --db URL or DLTH_DB)", args
    assert not (tmp_path / "here").exists() and not (tmp_path / "x").exists()


def populate(url: str, tmp_path: Path) -> None:
    spec = {"train": {"lr": 0.1, "epochs": 3}, "hparams": {"tau": [1, 2]}}
    with Store(url) as store:
        gid = store.upsert_grid("g", json.dumps({"name": "g"}), "sh", "g.toml", 2)
        store.add_jobs(gid, [NewJob(f"j{i}", json.dumps(spec), "supervised", "ck", i, str(tmp_path / f"j{i}"),
                                    "full" if i < 2 else "half", "sup") for i in range(3)])
        a = store.claim("j0", backend="local", backend_id=None, host="n1", pid=1)
        store.finish_attempt(a, AttemptState.PREEMPTED)
        a = store.claim("j0", backend="local", backend_id=None, host="n1", pid=2)
        store.log_metrics("j0", 0, {"acc": 0.25}, a)
        store.complete("j0", a, {"acc": 0.75, "state": 1.0})  # a metric named like a job column
        a = store.claim("j1", backend="local", backend_id=None, host="n2", pid=3)
        store.complete("j1", a, {"acc": float("nan"), "state": 0.0})
        other = store.upsert_grid("other", "{}", "x", "", 2)
        store.add_jobs(other, [NewJob("k0", "{}", "supervised", "ck", 0, str(tmp_path / "k0"), "full", "sup")])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_export_writes_flat_jobs_attempts_and_metrics(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    populate(db_url, tmp_path)
    out = tmp_path / "export"
    code, msg = invoke("--db", db_url, "export", "g", "--out", str(out))
    assert code == 0 and "3 jobs, 3 attempts, 5 metrics" in msg, msg
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["grid.json"] + [f"{t}.{f}" for t in ("jobs", "attempts", "metrics") for f in ("csv", "json")])

    jobs = read_csv(out / "jobs.csv")
    assert [j["job_hash"] for j in jobs] == ["j0", "j1", "j2"]  # one row per job, only this grid's
    j0, j1, j2 = jobs
    assert (j0["acc"], j0["metric.state"], j0["state"], j0["attempt_count"]) == ("0.75", "1.0", "COMPLETED", "2")
    assert (j1["acc"], j2["acc"], j2["state"]) == ("", "", "PENDING")  # NaN and missing are empty
    assert (j0["spec.train.lr"], j0["spec.hparams.tau"]) == ("0.1", "[1, 2]")
    jobs_json = json.loads((out / "jobs.json").read_text())
    assert [r["job_hash"] for r in jobs_json] == ["j0", "j1", "j2"]
    assert jobs_json[0]["acc"] == 0.75 and jobs_json[1]["acc"] is None and jobs_json[0]["spec.train.epochs"] == 3
    assert set(jobs_json[0]) == set(j0)  # the same columns in both formats

    attempts = read_csv(out / "attempts.csv")
    assert [(a["job_hash"], a["number"], a["state"]) for a in attempts] == [
        ("j0", "1", "PREEMPTED"), ("j0", "2", "COMPLETED"), ("j1", "1", "COMPLETED")]
    assert all(float(a["duration_s"]) >= 0 for a in attempts)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(m["job_hash"], m["epoch"], m["name"]) for m in metrics] == [
        ("j0", FINAL_EPOCH, "acc"), ("j0", FINAL_EPOCH, "state"), ("j0", 0, "acc"),
        ("j1", FINAL_EPOCH, "acc"), ("j1", FINAL_EPOCH, "state")]
    assert metrics[0]["subset_name"] == "full" and metrics[3]["value"] is None
    assert len(read_csv(out / "metrics.csv")) == 5
    grid = json.loads((out / "grid.json").read_text())
    assert grid == {"name": "g", "spec_hash": "sh", "source_path": "g.toml", "spec": {"name": "g"}}


def test_export_errors_and_single_format(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    populate(db_url, tmp_path)
    code, msg = invoke("--db", db_url, "export", "nope", "--out", str(tmp_path / "a"))
    assert code == 2 and "grid 'nope': not in the database (known grids: g, other)" in msg
    code, msg = invoke("--db", db_url, "export", "g", "--out", str(tmp_path / "b"), "--format", "csv,parquet")
    assert code == 2 and "--format: expected" in msg and not (tmp_path / "b").exists()
    code, _ = invoke("--db", db_url, "export", "g", "--out", str(tmp_path / "c"), "--format", "json")
    assert code == 0 and sorted(p.suffix for p in (tmp_path / "c").iterdir()) == [".json"] * 4


def test_nan_is_null_in_the_database_and_never_a_bare_json_token(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    populate(db_url, tmp_path)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM metrics WHERE value IS NULL")).scalar() == 1
    engine.dispose()
    assert invoke("--db", db_url, "export", "g", "--out", str(tmp_path / "e"))[0] == 0
    for name in ("jobs.json", "metrics.json"):
        assert "NaN" not in (tmp_path / "e" / name).read_text()
