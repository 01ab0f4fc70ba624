"""Reliability and security, the fast part: data pre-flight, error classes, the breaker's rule, status
showing retries, worker settings files. Real .beton files, a real store, the real CLI (in-process).
The SLURM and PostgreSQL cases are in ``test_reliability_slurm.py``."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
from pathlib import Path

import numpy as np
import pytest

from db import AttemptState, JobState, NewJob, Store
from orchestrator import breaker
from orchestrator.cli import main
from specs.base import SpecError
from specs.settings import WorkerSettings
from workers.errors import NonFiniteLoss, check_loss, describe

GRID = """
name = "rel"
seeds = [0]
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = 1
batch_size = 64
image_size = 32
[subsets.full]
strategy = "full"
[methods.supervised]
lr = [0.01, 0.2]
"""


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``dlth-orch ARGS`` in this process; returns (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def dataset(tmp_path: Path, digits: Path) -> Path:
    """A private copy of the real digits dataset (tests damage it)."""
    root = tmp_path / "digits"
    shutil.copytree(digits, root)
    return root


def test_a_truncated_beton_is_refused_at_launch_and_nothing_is_recorded(
        tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    beton = dataset / "train.beton"
    beton.write_bytes(beton.read_bytes()[:5000])  # the case: the quickstart's file cut to 5,000 bytes
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(root=dataset))
    db = tmp_path / "db.sqlite"
    code, out, err = run_cli(capsys, "launch", str(grid), "--no-progress", "--db", f"sqlite:///{db}")
    assert code == 2, out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(beton) in lines[0] and "truncated" in lines[0], err
    assert not db.exists(), "nothing recorded"
    assert not (Path(os.environ["DLTH_HOME"]) / "jobs").exists()


def test_preflight_checks_sample_count_and_labels_without_reading_the_data(dataset: Path) -> None:
    from orchestrator.preflight_data import check_data
    from subsets import DatasetMeta, DatasetMetaError

    check_data(DatasetMeta.load(dataset), "local")  # the intact dataset passes
    labels = np.load(dataset / "val_labels.npy")
    swapped = labels.copy()
    swapped[[0, -1]] = labels[[-1, 0]]  # same classes and count, two samples' labels exchanged
    np.save(dataset / "val_labels.npy", swapped)
    with pytest.raises(DatasetMetaError, match=r"val\.beton: labels: .*fingerprint .*first is sample 0"):
        check_data(DatasetMeta.load(dataset), "local")
    np.save(dataset / "val_labels.npy", np.concatenate([labels, labels[:3]]))
    doc = json.loads((dataset / "meta.json").read_text())
    doc["splits"]["val"]["num_samples"] += 3
    (dataset / "meta.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetMetaError, match=rf"val\.beton: num_samples: expected {len(labels) + 3} samples"):
        check_data(DatasetMeta.load(dataset), "local")


def test_known_failures_read_like_errors() -> None:
    def raised(exc: BaseException) -> BaseException:
        try:
            raise exc
        except BaseException as caught:  # noqa: BLE001
            return caught

    with pytest.raises(NonFiniteLoss) as nan:
        check_loss(math.nan, 0, 4)
    assert describe(nan.value).startswith("NaN loss: loss is nan at epoch 1, step 5")
    check_loss(0.5, 0, 0)
    assert describe(raised(MemoryError())).startswith("out of memory")
    assert describe(raised(RuntimeError("CUDA error: an illegal memory access was encountered"))).startswith(
        "CUDA error: RuntimeError: CUDA error")
    assert describe(raised(RuntimeError("NCCL communicator was aborted"))).startswith("NCCL error")
    changed = describe(raised(ValueError("subset 'full' ... the dataset changed; relaunch the grid")))
    assert changed.startswith("dataset changed: ValueError")
    unreadable = describe(raised(OSError(2, "No such file or directory", "/data/x/train.beton")))
    assert unreadable.startswith("data file unreadable: /data/x/train.beton: FileNotFoundError")
    assert describe(raised(KeyError("lr"))) == "KeyError: 'lr'"


def test_the_same_error_normalises_the_same() -> None:
    a = "data file unreadable: /a/b/train.beton: ValueError: negative dimensions at 0x7f3a12 (4096 bytes)"
    b = "data file unreadable: /c/train.beton: ValueError: negative dimensions at 0x11aa (12 bytes)"
    assert breaker.normalise(a) == breaker.normalise(b)
    assert breaker.normalise(a) != breaker.normalise("KeyError: 'lr'")
    with pytest.raises(SpecError, match="breaker.threshold: expected an integer >= 2"):
        breaker.BreakerSettings.from_table({"threshold": 1}, "grid.toml")
    with pytest.raises(SpecError, match="breaker.limit: expected one of threshold, enabled"):
        breaker.BreakerSettings.from_table({"limit": 3})


def _store_with_jobs(tmp_path: Path, n: int, budget: int = 2) -> tuple[str, Store, list[str]]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    gid = store.upsert_grid("g", json.dumps({"breaker": {"threshold": 3}}), "h", str(tmp_path / "g.toml"), budget)
    hashes = [f"job{i}" for i in range(n)]
    store.add_jobs(gid, [NewJob(h, "{}", "supervised", "ck", i, str(tmp_path / h), "full", f"c{i}")
                         for i, h in enumerate(hashes)])
    return url, store, hashes


def _fail(store: Store, job: str, reason: str) -> None:
    attempt = store.claim(job, backend="local", backend_id=None, host="h", pid=1)
    assert attempt is not None
    store.finish_attempt(attempt, AttemptState.FAILED, exit_code=1, reason=reason)


def test_a_flaky_job_never_trips_the_breaker_but_three_jobs_with_the_same_error_do(tmp_path: Path) -> None:
    _, store, jobs = _store_with_jobs(tmp_path, 4)
    for _ in range(3):  # one job failing again and again: its retries do not count
        _fail(store, jobs[0], "data file unreadable: /d/train.beton: ValueError: negative dimensions")
        store.set_state([jobs[0]], JobState.QUEUED, [JobState.FAILED])
    _fail(store, jobs[1], "KeyError: 'lr'")  # another error
    assert breaker.check(store, "g") is None
    _fail(store, jobs[2], "data file unreadable: /e/train.beton: ValueError: negative dimensions")
    assert breaker.check(store, "g") is None  # 2 distinct jobs < threshold 3
    _fail(store, jobs[3], "data file unreadable: /f/train.beton: ValueError: negative dimensions")
    state = breaker.check(store, "g")
    assert state is not None and state.jobs == [jobs[0], jobs[2], jobs[3]]
    assert breaker.paused(store, "g") is not None  # persisted in dlth_meta
    assert breaker.resume(store, "g") == 0  # no SLURM task to release
    assert breaker.check(store, "g") is None, "failures from before the resume no longer count"
    store.close()


def test_status_shows_a_failed_and_retrying_job_and_a_paused_grid(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per job, as a wide terminal shows it
    url, store, jobs = _store_with_jobs(tmp_path, 3)
    _fail(store, jobs[0], "Traceback ...\nout of memory: MemoryError (lower the batch size or ask for more memory)")
    store.set_state([jobs[0]], JobState.QUEUED, [JobState.FAILED])  # what a backend does within the budget
    code, out, _ = run_cli(capsys, "status", "g", "--db", url)
    assert code == 0
    line = next(ln for ln in out.splitlines() if "RETRYING" in ln)
    assert "1 failed attempts" in line and "out of memory: MemoryError" in line and "c0" in line
    code, out, _ = run_cli(capsys, "status", "g", "--json", "--db", url)
    (doc,) = json.loads(out)
    assert doc["retrying"] == [{"job": jobs[0], "label": "full/c0/s0", "state": "QUEUED", "failures": 1,
                                "error": "out of memory: MemoryError (lower the batch size or ask for more memory)"}]
    assert doc["paused"] is None
    for job in jobs[1:]:
        _fail(store, job, "out of memory: MemoryError (lower the batch size or ask for more memory)")
    code, out, _ = run_cli(capsys, "status", "g", "--db", url)  # status trips the breaker
    paused = [ln for ln in out.splitlines() if "PAUSED" in ln]
    assert len(paused) == 1 and "dlth-orch resume g" in paused[0] and "out of memory" in paused[0]
    code, out, _ = run_cli(capsys, "resume", "g", "--db", url)
    assert code == 0 and "resumed" in out
    assert json.loads(run_cli(capsys, "status", "g", "--json", "--db", url)[1])[0]["paused"] is None
    store.close()


def test_worker_settings_are_a_private_file(tmp_path: Path) -> None:
    s = WorkerSettings(db_url="postgresql+psycopg://u:pw@h/db", backend="slurm", backend_id="1_0", heartbeat_s=5)
    path = s.write(tmp_path / "sub" / "worker_settings.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert WorkerSettings.read(path) == s
    with pytest.raises(ValueError, match="db_url: expected the database URL"):
        WorkerSettings.from_json("{}")


@pytest.mark.slow
def test_a_nan_loss_stops_training_and_is_recorded_as_such(tmp_path: Path, digits: Path) -> None:
    """The real worker (in this process, one rank on the CPU) on the real digits with an absurd learning
    rate: training stops at the first non-finite loss and the attempt says so in one line."""
    from orchestrator.grid import load_grid
    from orchestrator.launch import record_grid
    from orchestrator.workspace import job_dir_for
    from subsets import DatasetMeta
    from workers.distributed import setup_distributed
    from workers.entry import STOP_SIGNALS, run

    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(GRID.format(root=digits).replace("lr = [0.01, 0.2]", "lr = 1e12"))
    grid = load_grid(grid_file)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with Store(url) as store:
        (job,) = record_grid(store, grid, DatasetMeta.load(digits)).jobs
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}  # the worker installs its own handlers
    try:
        with pytest.raises(NonFiniteLoss):
            run(job_dir_for(job.spec.job_hash) / "job.json", WorkerSettings(db_url=url, heartbeat_s=60),
                setup_distributed())
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    with Store(url) as store:
        (attempt,) = store.attempts(job.spec.job_hash)
        assert attempt.state == AttemptState.FAILED
        assert attempt.exit_reason.startswith("NaN loss: loss is "), attempt.exit_reason
        assert store.job(job.spec.job_hash).last_error == attempt.exit_reason


def test_resume_releases_every_task_the_breaker_held_even_if_their_jobs_moved_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM is replaced by a recorder of the ``scontrol`` calls (the real cluster runs in
    test_reliability_slurm.py): the breaker remembers the tasks it held, and ``resume`` releases them
    all, even a task whose job the database no longer lists as queued."""
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(breaker, "_scontrol", lambda _s, _g, action, ids: calls.append((action, list(ids))))
    _, store, jobs = _store_with_jobs(tmp_path, 5)
    store.mark_queued(jobs[3:], "slurm", ["7_3", "7_4"])
    for job in jobs[:3]:
        _fail(store, job, "data file unreadable: /d/train.beton: ValueError: negative dimensions")
    assert breaker.check(store, "g") is not None
    assert calls == [("hold", ["7_3", "7_4"])]
    assert breaker.paused(store, "g").held == ["7_3", "7_4"]
    store.set_state([jobs[4]], JobState.PENDING, [JobState.QUEUED])  # e.g. a lagging accounting record
    assert breaker.resume(store, "g") == 2
    assert calls[-1] == ("release", ["7_3", "7_4"])
    assert store.breaker_state("g").held == []
    store.close()


def test_the_worker_that_records_the_failure_trips_the_breaker_and_later_workers_hand_their_jobs_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``status``, no follower: the third worker to record the same first-attempt failure pauses the
    grid itself; a worker that starts afterwards refuses to train (no attempt, the job stays QUEUED); the
    next orchestrator look holds the pending SLURM tasks once (``scontrol`` replaced by a recorder here;
    the real cluster: test_reliability_slurm.py)."""
    from workers.reporting import JobReporter

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(breaker, "_scontrol", lambda _s, _g, action, ids: calls.append((action, list(ids))))
    _, store, jobs = _store_with_jobs(tmp_path, 5)
    store.mark_queued(jobs[3:], "slurm", ["7_3", "7_4"])
    for i, job in enumerate(jobs[:3]):
        reporter = JobReporter(store, job, tmp_path / job)
        assert reporter.claim("local", None, "h", 100 + i, None) is not None
        assert store.breaker_state("g").paused is False
        reporter.close(AttemptState.FAILED, exit_code=1, reason=f"data file unreadable: /d{i}/train.beton: boom")
    state = store.breaker_state("g")
    assert state.paused and state.hold_pending and state.jobs == sorted(jobs[:3])
    assert state.by == f"the worker of job {jobs[2]}"
    assert JobReporter(store, jobs[3], tmp_path / jobs[3]).claim("slurm", "7_3", "h", 200, None) is None
    assert store.job(jobs[3]).state == JobState.QUEUED and store.attempts(jobs[3]) == []
    assert breaker.check(store, "g") is not None and calls == [("hold", ["7_3", "7_4"])]
    assert not store.breaker_state("g").hold_pending and store.breaker_state("g").held == ["7_3", "7_4"]
    assert breaker.check(store, "g") is not None and len(calls) == 1  # held once
    store.close()
