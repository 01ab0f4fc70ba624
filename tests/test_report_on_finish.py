"""The report appears when the grid finishes, without anyone asking: ``launch --wait`` (local), the detached
local launcher, ``[report] every = N`` while the grid runs, and the SLURM report job of a ``--no-wait`` grid
(real single-node SLURM cluster, real training on the digits; nothing mocked)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from db import JobState, Store

from .grids import EVEN5, FULL, tiny_grid
from .test_e2e_local import cli as local_cli
from .test_slurm_backend import (  # noqa: F401 - fixtures
    Fresh,
    home,
    release_requeued,
    signal_paused_worker,
    slurm_cluster,
    squeue_state,
    wait_for,
    write_grid,
)
from .test_slurm_backend import cli as slurm_cli


def local_grid(root: Path, lrs: str) -> str:
    """Two subsets x the supervised learning rates ``lrs`` (a TOML list), the report rewritten every 2 jobs."""
    return tiny_grid("fin", root, lr=0.05, knn_k=10, tables="[report]\nevery = 2\n", subsets=FULL + EVEN5,
                     methods=f"[methods.supervised]\nlr = {lrs}\n")


def _report_json(workspace: Path, grid: str) -> dict:
    return json.loads((workspace / "reports" / grid / "report.json").read_text())


@pytest.mark.slow
def test_launch_wait_writes_the_report_refreshes_it_while_running_and_the_detached_launcher_too(
        tmp_path: Path, digits: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(local_grid(digits, "[0.01, 0.2]"))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = local_cli("-v", "launch", str(grid), "--cluster", "local", "--no-progress", db=db, home=tmp_path)
    # the decision and where the files are, instead of the status table
    assert "every job has ended (4 completed); its report:" in out.stdout
    written = r"written: \S+/reports/fin/report\.html \(\+ report\.md, report\.json, \d plots\)"
    assert re.search(written, out.stdout), out.stdout
    assert "subset" not in out.stdout.splitlines()[0]
    rep = _report_json(tmp_path, "fin")
    assert (rep["jobs_completed"], rep["jobs_total"], rep["complete"]) == (4, 4, True)
    assert rep["decision"] is not None
    # [report] every = 2: rewritten while the grid ran, before its last job ended
    refreshed = [int(n) for n in re.findall(r"report of fin refreshed \((\d+) jobs completed\)", out.stderr)]
    assert refreshed and min(refreshed) < 4, out.stderr
    (status,) = json.loads(local_cli("status", "fin", "--json", db=db, home=tmp_path).stdout)
    assert status["report"]["state"] == "written" and status["report"]["jobs_completed"] == 4
    assert "report.html" in local_cli("status", "fin", db=db, home=tmp_path).stdout

    # the detached launcher writes it too when its last job ends (a third learning rate: 2 new jobs)
    grid.write_text(local_grid(digits, "[0.01, 0.2, 0.1]"))
    out = local_cli("launch", str(grid), "--cluster", "local", "--detach", db=db, home=tmp_path)
    assert "launched in the background" in out.stderr

    def written_for_eight() -> bool:
        doc = json.loads(local_cli("status", "fin", "--json", db=db, home=tmp_path).stdout)[0]["report"]
        return doc["state"] == "written" and doc["jobs_completed"] == 6

    wait_for("the detached launcher's report", written_for_eight, timeout=300, every=2)
    assert _report_json(tmp_path, "fin")["jobs_completed"] == 6


def test_a_failing_report_job_is_recorded_and_never_fails_the_grid(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.backends.slurm_report import ReportJob, load_report_job
    from orchestrator.report_files import report_status, run_report_job

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.upsert_grid("g", json.dumps({"report": {"metric": "knn_top1"}}), "h", "", 1)
    job = ReportJob("123", ("120",), "2026-01-01T00:00:00+00:00", str(tmp_path / "r"), str(tmp_path / "r.out"))
    store.set_meta("report/slurm_job/g", job.to_json())
    assert report_status(store, "g")["state"] == "scheduled"
    import orchestrator.report_files as rf

    def broken(*_a: object, **_k: object) -> None:  # a report that cannot be computed (any reason)
        raise ValueError("metric knn_top1: no job has it")

    monkeypatch.setattr(rf, "produce_for_grid", broken)
    assert run_report_job(store, "g", tmp_path / "r") is None
    recorded = load_report_job(store, "g")
    assert recorded is not None and recorded.outcome == "failed: metric knn_top1: no job has it"
    st = report_status(store, "g")
    assert st["state"] == "failed" and "r.out" in st["line"] and "dlth-orch report g" in st["line"]
    assert store.state_counts("g") == {}  # the grid's jobs are untouched


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_report_job_runs_after_the_last_task_and_is_relinked_when_the_grid_grows(
        tmp_path: Path, home: Path, digits: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The requeue lands while a task's worker stands paused after its first epoch (``DLTH_TEST_PAUSE``)."""
    from orchestrator.grid import expand, load_grid
    from subsets import DatasetMeta
    from workers.test_hooks import EPOCH_SAVED, PAUSE_ENV

    def write(seeds: str) -> Path:
        return write_grid(tmp_path / "grid.toml", "rj", digits, epochs=2,
                          methods=f"[methods.supervised]\nseeds = {seeds}\nlr = [0.01, 0.2]")

    grid = write("[0]")
    requeued = expand(load_grid(grid), DatasetMeta.load(digits))[0].spec.job_hash  # a task of the first array
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    (pauses / f"{requeued}.{EPOCH_SAVED}").touch()
    monkeypatch.setenv(PAUSE_ENV, str(pauses))  # sbatch passes the environment to the tasks
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    slurm_cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    store = Fresh(db)
    first = json.loads(slurm_cli("status", "rj", "--json", db=db).stdout)[0]["report"]
    assert first["state"] == "scheduled", first
    # a relaunch that extends the grid (a second seed) re-links the report job to the new array too
    grid = write("[0, 1]")
    slurm_cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    jobs = store.jobs("rj")
    arrays = {j.backend_id.split("_")[0] for j in jobs}
    assert len(jobs) == 4 and len(arrays) == 2
    with_store = Store(db)
    try:
        from orchestrator.backends.slurm_report import load_report_job

        report_job = load_report_job(with_store, "rj")
    finally:
        with_store.close()
    assert report_job is not None and report_job.slurm_id != first["slurm_id"]
    newest = max(arrays, key=int)  # the relaunch's array; the first one's tasks may already have ended
    assert newest in report_job.depends_on and set(report_job.depends_on) <= arrays
    assert squeue_state(first["slurm_id"]) in ("", "CANCELLED"), "the old report job is gone"
    assert squeue_state(report_job.slurm_id) == "PENDING"

    # one task requeued along the way (as on preemption): the report job keeps waiting for it
    sid = store.job(requeued).backend_id
    assert sid and sid.split("_")[0] != newest
    signal_paused_worker(home, sid, pauses / f"{requeued}.{EPOCH_SAVED}.paused", ["scontrol", "requeue", sid],
                         "SIGTERM")
    release_requeued(sid)

    report = home / "reports" / "rj" / "report.json"

    def grid_over() -> bool:
        active = [j for j in store.jobs("rj") if squeue_state(j.backend_id) not in ("", "COMPLETED")]
        assert not report.exists() or active == [], "the report ran before the grid's last task ended"
        return not active

    wait_for("every task of the grid to end", grid_over, timeout=480, every=1)
    wait_for("the report job's report", report.exists, timeout=120, every=1)
    rep = json.loads(report.read_text())
    assert (rep["jobs_completed"], rep["jobs_total"]) == (4, 4)
    assert {j.state for j in store.jobs("rj")} == {JobState.COMPLETED}
    status = json.loads(slurm_cli("status", "rj", "--json", db=db).stdout)[0]["report"]
    assert status["state"] == "written" and status["jobs_completed"] == 4
