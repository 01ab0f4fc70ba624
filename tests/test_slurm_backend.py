"""The SLURM backend on the real single-node cluster of ``scripts/slurm-cluster.sh`` (slurmctld, slurmd,
slurmdbd on MariaDB), training real models on the digits images.

Skipped only where the cluster cannot exist (not root, no SLURM packages); never under CI=true, where the
script installs what is missing. Mocked: nothing (several nodes cannot exist here: the 2-task DDP job
runs both tasks on the one node).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from db import AttemptState, JobState, Store
from db.testing import in_ci
from orchestrator.backends.slurm_reconcile import ReconcileResult

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _cannot_run() -> str | None:
    if in_ci():
        return None  # CI must run these: the script installs SLURM
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root"
    if not (shutil.which("slurmctld") or Path("/usr/sbin/slurmctld").exists()):
        return "SLURM is not installed (scripts/slurm-cluster.sh up installs it)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    reason = _cannot_run()
    if reason:
        pytest.skip(reason)
    subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), "up"], check=True, timeout=300)


@pytest.fixture
def home(_isolated_workspace: Path, slurm_cluster: None) -> Iterator[Path]:
    """The test's workspace; SLURM jobs it left behind are cancelled afterwards."""
    yield _isolated_workspace

    def mine() -> list[str]:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%Z"], capture_output=True, text=True).stdout
        return [line.split("|")[0] for line in out.splitlines()
                if str(_isolated_workspace) in line and "|PENDING|" not in line]

    # a task's process outlives the result it recorded by a few seconds: let running ones end
    deadline = time.time() + 20
    while mine() and time.time() < deadline:
        time.sleep(0.5)
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%Z"], capture_output=True, text=True).stdout
    left = [line.split("|")[0] for line in out.splitlines() if str(_isolated_workspace) in line]
    if left:
        subprocess.run(["scancel", *left], check=False)


GRID = """
name = "{name}"
seeds = [0]
failure_budget = {budget}
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = {epochs}
batch_size = 64
lr = 0.05
image_size = 32
[eval]
knn_k = 10
[resources]
cpus_per_task = 1
loader_workers = 1
{resources}
[cluster]
profile = "slurm-local"
poll_min_s = 0.5
poll_max_s = 3.0
{cluster}
[subsets.full]
strategy = "full"
{subsets}
{methods}
"""
TWO_CONFIGS = """
[methods.supervised]
lr = [0.01, 0.2]
"""


def write_grid(path: Path, name: str, digits: Path, *, epochs: int = 1, budget: int = 1, resources: str = "",
               cluster: str = "", subsets: str = "", methods: str = TWO_CONFIGS) -> Path:
    path.write_text(GRID.format(name=name, root=digits, epochs=epochs, budget=budget, resources=resources,
                                cluster=cluster, subsets=subsets, methods=methods))
    return path


def cli(*args: str, db: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLTH_HEARTBEAT_S": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--db", db], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@contextmanager
def opened(db: str) -> Iterator[Store]:
    store = Store(db)
    try:
        yield store
    finally:
        store.close()


class Fresh:
    """Store reads, each through a new Store: a Store kept open in a process that opened a second one can
    miss later writes of other processes (SQLite; reported to the store's owner), and workers write."""

    def __init__(self, db: str) -> None:
        self.db = db

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with opened(self.db) as store:
                return getattr(store, name)(*args, **kwargs)

        return call


def refresh(db: str, grid: str) -> ReconcileResult:
    from orchestrator.backends.slurm import SlurmBackend

    with opened(db) as store:
        return SlurmBackend().refresh(store, grid)


def wait_for(what: str, cond: Callable[[], object], timeout: float = 180, every: float = 0.5) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def squeue_state(slurm_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-j", slurm_id, "-o", "%T"], capture_output=True, text=True).stdout
    return out.strip()


def release_requeued(slurm_id: str) -> None:
    """A requeued job waits ~2 minutes (BeginTime) before it may start again: make it eligible now.

    Not in the very second of the requeue: slurmd refuses to launch a job within the second its previous
    run's credential was revoked ("Job credential revoked"), and the job fails.
    """
    wait_for(f"{slurm_id} requeued", lambda: squeue_state(slurm_id) == "PENDING", timeout=60, every=0.2)
    time.sleep(2)
    done = subprocess.run(["scontrol", "update", f"jobid={slurm_id}", "StartTime=now"], capture_output=True,
                          text=True)
    # it may have started in those 2 seconds (then SLURM says it is no longer pending): that is fine too
    assert done.returncode == 0 or "no longer pending" in done.stderr.lower(), done.stderr


def pause_after_first_epoch(grid: Path, digits: Path, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:
    """Arm ``DLTH_TEST_PAUSE`` for the one job of ``grid``: its worker stands paused after its first epoch
    checkpoint until the test deletes the returned marker. Returns (the job's spec, that marker)."""
    from orchestrator.grid import expand, load_grid
    from subsets import DatasetMeta
    from workers.test_hooks import EPOCH_SAVED, PAUSE_ENV

    (spec,) = (ej.spec for ej in expand(load_grid(grid), DatasetMeta.load(digits)))
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    armed = pauses / f"{spec.job_hash}.{EPOCH_SAVED}"
    armed.touch()
    monkeypatch.setenv(PAUSE_ENV, str(pauses))  # sbatch passes the environment to the tasks
    return spec, armed.with_name(f"{armed.name}.paused")


def signal_paused_worker(home: Path, slurm_id: str, paused: Path, command: list[str], signame: str) -> None:
    """Once the worker of task ``slurm_id`` stands paused (``DLTH_TEST_PAUSE``: its ``paused`` marker exists),
    run ``command`` to signal it, and release it once its log says it received ``signame``: it stops at its
    next batch, right after the checkpoint it paused at, whatever the machine's speed."""
    def received() -> int:
        logs = list((home / "slurm").glob(f"*/*/logs/{slurm_id}_0_log.out"))
        return logs[0].read_text().count(f"received {signame}") if logs else 0

    wait_for("the worker paused after an epoch checkpoint", paused.exists)
    seen = received()
    subprocess.run(command, check=True)
    wait_for(f"the worker to log {signame}", lambda: received() > seen, timeout=60, every=0.1)
    paused.unlink()


def submission_dirs(home: Path) -> list[Path]:
    return sorted(p for p in (home / "slurm").glob("*/*") if p.is_dir())


def test_array_grid_completes_with_metrics_and_one_query_per_refresh(tmp_path: Path, home: Path,
                                                                     digits: Path) -> None:
    from orchestrator.backends.slurm_cmd import COMMANDS
    from orchestrator.backends.slurm_profile import job_name

    grid = write_grid(tmp_path / "grid.toml", "arr", digits, subsets='[subsets.even5]\nstrategy = "uniform"\nk = 5')
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)
    assert "4 jobs to run" in out.stderr + out.stdout

    store = Fresh(db)
    jobs = store.jobs("arr")
    assert len(jobs) == 4 and {j.state for j in jobs} == {JobState.COMPLETED}
    finals = store.final_metrics("arr")
    assert all(0.0 <= finals[j.job_hash]["knn_top1"] <= 1.0 for j in jobs)
    arrays = {j.backend_id.split("_")[0] for j in jobs}
    assert len(arrays) == 1, "the grid's 4 jobs go in one array"
    assert sorted(int(j.backend_id.split("_")[1]) for j in jobs) == [0, 1, 2, 3]
    for j in jobs:
        (a,) = store.attempts(j.job_hash)
        assert (a.state, a.backend, a.backend_id) == (AttemptState.COMPLETED, "slurm", j.backend_id)

    with opened(db) as real:
        name = job_name(real, "arr")

    def by_name() -> list[str]:
        return sorted(subprocess.run(["sacct", "-X", "-P", "-n", f"--name={name}", "-S", "now-1hours", "-o",
                                      "JobID,State"], capture_output=True, text=True, check=True).stdout.split())

    # the database hears of a result before SLURM sees the task's process exit
    expected = sorted(f"{j.backend_id}|COMPLETED" for j in jobs)
    wait_for("SLURM to list the grid's tasks COMPLETED under its one name", lambda: by_name() == expected, 60)
    before = dict(COMMANDS)
    refresh(db, "arr")
    ran = {k: COMMANDS[k] - before.get(k, 0) for k in COMMANDS}
    assert ran.get("sacct") == 1 and sum(ran.values()) == 1, ran

    # relaunching (returns once submitted: nothing to submit) changes nothing
    out = cli("launch", str(grid), "--cluster", "slurm", "--no-progress", db=db)
    assert "0 jobs to run" in out.stderr + out.stdout
    assert len(submission_dirs(home)) == 1


def test_sigusr2_and_scontrol_requeue_resume_from_the_last_checkpoint(
        tmp_path: Path, home: Path, digits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each signal lands while the worker stands paused right after an epoch checkpoint (``DLTH_TEST_PAUSE``,
    workers/test_hooks.py), whatever the machine's speed; released once it logged the signal, the worker
    stops at its next batch and records the attempt."""
    grid = write_grid(tmp_path / "grid.toml", "requeue", digits, epochs=4, methods="[methods.supervised]")
    spec, paused = pause_after_first_epoch(grid, digits, tmp_path, monkeypatch)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    store = Fresh(db)
    (job,) = store.jobs("requeue")
    sid, job_dir = job.backend_id, Path(job.job_dir)
    assert sid and job.job_hash == spec.job_hash

    # 1. SIGUSR2, as on preemption or near the time limit: submitit checkpoints and requeues
    signal_paused_worker(home, sid, paused, ["scancel", "--signal=USR2", sid], "SIGUSR2")
    release_requeued(sid)
    # 2. scontrol requeue (an admin, or SLURM's own preemption): the worker stops on SIGTERM
    paused.with_suffix("").touch()  # armed again: the resumed run pauses after its first epoch
    signal_paused_worker(home, sid, paused, ["scontrol", "requeue", sid], "SIGTERM")
    release_requeued(sid)
    cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)  # follow it to the end

    job = store.job(job.job_hash)
    assert job is not None and job.state == JobState.COMPLETED and job.failure_count == 0
    states = [a.state for a in store.attempts(job.job_hash)]
    assert states == [AttemptState.PREEMPTED, AttemptState.PREEMPTED, AttemptState.COMPLETED], states
    assert {a.backend_id for a in store.attempts(job.job_hash)} == {sid}, "requeued, not resubmitted"
    log = next((home / "slurm").glob(f"*/*/logs/{sid}_0_log.out")).read_text()
    resumed = [int(line.rsplit("epoch ", 1)[1].split()[0]) for line in log.splitlines() if "resuming from" in line]
    assert resumed == [1, 2], resumed  # each run resumed from the checkpoint the signal found
    epochs = [json.loads(line)["epoch"] for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(epochs)) == list(range(4))
    assert len(epochs) == 4, "stopped right after a checkpoint, no epoch is redone"
    assert "knn_top1" in store.final_metrics("requeue")[job.job_hash]


def test_time_limit_signals_checkpoints_requeues_and_resumes(tmp_path: Path, home: Path, digits: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM's own time limit, for real: 2-minute runs with SIGUSR2 30 s before the limit (SLURM may send it
    up to 60 s early, so a run lasts 30-90 s, whatever a loaded machine's worker start takes). The worker
    stands paused after its first epoch checkpoint (``DLTH_TEST_PAUSE``) until SLURM's signal reaches it; it
    then stops and submitit requeues: the stopped attempt is recorded TIMEOUT, not a failure, and the
    requeued run resumes from that checkpoint."""
    grid = write_grid(tmp_path / "grid.toml", "timelimit", digits, epochs=400, resources="time_min = 2",
                      cluster="signal_delay_s = 30", methods="[methods.supervised]")
    spec, paused = pause_after_first_epoch(grid, digits, tmp_path, monkeypatch)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    store = Fresh(db)
    (job,) = store.jobs("timelimit")
    sid = job.backend_id
    assert sid and job.job_hash == spec.job_hash

    def log_text() -> str:
        logs = list((home / "slurm").glob(f"*/*/logs/{sid}_0_log.out"))
        return logs[0].read_text() if logs else ""

    def resumed() -> bool:
        text = log_text()
        if "resuming from" in text:
            return True
        if paused.exists() and "received SIGUSR2" in text:  # SLURM's signal reached the paused worker
            paused.unlink()
        if squeue_state(sid) == "PENDING" and store.attempts(job.job_hash):  # requeued: start it again now
            release_requeued(sid)
        return False

    wait_for("a requeued run to resume from a checkpoint", resumed, timeout=420, every=1)
    refresh(db, "timelimit")
    ended = [a for a in store.attempts(job.job_hash) if a.ended_at is not None]
    assert ended and {a.state for a in ended} == {AttemptState.TIMEOUT}, [(a.state, a.exit_reason) for a in ended]
    assert all("time limit" in (a.exit_reason or "") for a in ended)
    job = store.job(job.job_hash)
    assert job is not None and job.failure_count == 0 and job.backend_id == sid  # requeued, not resubmitted
    cli("cancel", "timelimit", "--yes", db=db)  # 400 epochs would take several more minutes


def test_cancelled_job_is_recorded_and_retried_and_a_stale_heartbeat_is_only_flagged(
        tmp_path: Path, home: Path, digits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both jobs stand paused after their first epoch (``DLTH_TEST_PAUSE``, workers/test_hooks.py) while the
    test acts, so they are running whatever the machine's speed, without epochs to spare."""
    from orchestrator.grid import expand, load_grid
    from subsets import DatasetMeta
    from workers.test_hooks import EPOCH_SAVED, PAUSE_ENV

    grid = write_grid(tmp_path / "grid.toml", "cancel", digits, epochs=4)
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    for ej in expand(load_grid(grid), DatasetMeta.load(digits)):
        (pauses / f"{ej.spec.job_hash}.{EPOCH_SAVED}").touch()
    monkeypatch.setenv(PAUSE_ENV, str(pauses))  # sbatch passes the environment to the tasks
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    store = Fresh(db)
    victim, other = store.jobs("cancel")

    def paused(job_hash: str) -> Path:
        return pauses / f"{job_hash}.{EPOCH_SAVED}.paused"

    wait_for("both jobs paused after their first epoch", lambda: all(paused(j.job_hash).exists()
                                                                      for j in (victim, other)))
    assert all(store.job(j.job_hash).state == JobState.RUNNING for j in (victim, other))  # type: ignore[union-attr]

    # a worker that stops beating while SLURM says RUNNING is flagged, not killed
    monkeypatch.setenv("DLTH_STALE_S", "3")
    (attempt,) = store.attempts(other.job_hash)
    assert attempt.pid
    os.kill(attempt.pid, signal.SIGSTOP)
    try:  # flagged as soon as its last heartbeat is 3 s old (polled, not a fixed sleep)
        wait_for("the stopped worker flagged STALE", lambda: refresh(db, "cancel").stale == [other.job_hash],
                 timeout=60, every=0.5)
        assert squeue_state(other.backend_id) == "RUNNING"  # type: ignore[arg-type]
        assert store.job(other.job_hash).state == JobState.RUNNING  # type: ignore[union-attr]
        out = cli("status", "cancel", db=db)
        assert "STALE" in out.stdout
    finally:
        os.kill(attempt.pid, signal.SIGCONT)
    paused(other.job_hash).unlink()  # it trains on to the end

    # cancelled outside dlth-orch: SLURM's verdict is recorded (the worker could only tell it was stopped);
    # released first, the victim is training its second of 4 epochs when SIGTERM lands
    paused(victim.job_hash).unlink()
    subprocess.run(["scancel", victim.backend_id], check=True)  # type: ignore[list-item]
    wait_for("the cancellation recorded", lambda: refresh(db, "cancel") and
             store.job(victim.job_hash).state == JobState.CANCELLED, timeout=60, every=1)  # type: ignore[union-attr]
    (cancelled,) = store.attempts(victim.job_hash)
    assert cancelled.state == AttemptState.CANCELLED and store.job(victim.job_hash).failure_count == 0  # type: ignore[union-attr]

    cli("retry", "cancel", "--cancelled", db=db)
    assert store.job(victim.job_hash).state == JobState.PENDING  # type: ignore[union-attr]
    cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)
    assert [a.state for a in store.attempts(victim.job_hash)] == [AttemptState.CANCELLED, AttemptState.COMPLETED]
    assert [a.state for a in store.attempts(other.job_hash)] == [AttemptState.COMPLETED]


def slurm_cmd(*args: str) -> str:
    """``dlth-orch slurm ...`` (the group the CLI mounts), in this process."""
    from click.testing import CliRunner

    from orchestrator.commands.slurm_cmds import slurm

    result = CliRunner().invoke(slurm, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cancel_command_cancels_the_slurm_tasks_and_resubmit_brings_them_back(tmp_path: Path, home: Path,
                                                                              digits: Path) -> None:
    grid = write_grid(tmp_path / "grid.toml", "cmdcancel", digits, resources="slurm = { hold = true }")  # sbatch --hold
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    store = Fresh(db)
    ids = [j.backend_id for j in store.jobs("cmdcancel")]
    assert all(squeue_state(i) == "PENDING" for i in ids)  # type: ignore[arg-type]
    view = json.loads(slurm_cmd("jobs", "cmdcancel", "--json", "--db", db))
    assert sorted((r["slurm_id"], r["slurm_state"]) for r in view["jobs"]) == [(i, "PENDING") for i in sorted(ids)]

    cli("cancel", "cmdcancel", "--yes", db=db)
    assert {j.state for j in store.jobs("cmdcancel")} == {JobState.CANCELLED}
    wait_for("the tasks gone from the queue", lambda: not any(squeue_state(i) for i in ids), timeout=30)  # type: ignore[arg-type]
    cli("status", "cmdcancel", db=db)  # a refresh keeps them cancelled
    assert {j.state for j in store.jobs("cmdcancel")} == {JobState.CANCELLED}

    cli("retry", "cmdcancel", "--cancelled", db=db)
    slurm_cmd("resubmit", "cmdcancel", "--db", db)
    jobs = store.jobs("cmdcancel")
    assert {j.state for j in jobs} == {JobState.QUEUED} and not {j.backend_id for j in jobs} & set(ids)
    assert all(squeue_state(j.backend_id) == "PENDING" for j in jobs)  # type: ignore[arg-type]


CRASH_AFTER_SBATCH = """
import os, signal, sys
from db.store import Store
def killed(self, *args, **kwargs):  # the orchestrator dies right after sbatch, before recording the ids
    os.kill(os.getpid(), signal.SIGKILL)
Store.mark_queued = killed
from orchestrator.cli import main
main(sys.argv[1:])
"""


def test_orchestrator_killed_right_after_sbatch_is_reconciled_without_duplicates(tmp_path: Path, home: Path,
                                                                                digits: Path) -> None:
    grid = write_grid(tmp_path / "grid.toml", "crash", digits, resources="slurm = { hold = true }")  # sbatch --hold
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    proc = subprocess.run([sys.executable, "-c", CRASH_AFTER_SBATCH, "launch", str(grid), "--cluster", "slurm",
                           "--no-wait", "--no-progress", "--db", db], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = Fresh(db)
    assert {j.state for j in store.jobs("crash")} == {JobState.PENDING}, "the ids were never recorded"
    (sub,) = submission_dirs(home)
    array_id = (sub / "array_id").read_text()
    assert squeue_state(f"{array_id}_0") == "PENDING"

    out = cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    assert "2 jobs to run" in out.stderr + out.stdout  # the CLI's view before the backend reconciled
    assert len(submission_dirs(home)) == 1, "nothing submitted twice"
    jobs = store.jobs("crash")
    assert {j.state for j in jobs} == {JobState.QUEUED}
    assert sorted(j.backend_id for j in jobs) == [f"{array_id}_0", f"{array_id}_1"]  # type: ignore[type-var]

    subprocess.run(["scontrol", "release", array_id], check=True)
    cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)
    jobs = store.jobs("crash")
    assert {j.state for j in jobs} == {JobState.COMPLETED}
    assert all([a.backend_id for a in store.attempts(j.job_hash)] == [j.backend_id] for j in jobs)
    assert len(submission_dirs(home)) == 1


def test_two_task_ddp_job_runs_on_gloo(tmp_path: Path, home: Path, digits: Path) -> None:
    grid = write_grid(tmp_path / "grid.toml", "ddp", digits, epochs=2, methods="[methods.supervised]",
                      resources="nproc_per_node = 2")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)
    store = Fresh(db)
    (job,) = store.jobs("ddp")
    assert job.state == JobState.COMPLETED
    assert [a.state for a in store.attempts(job.job_hash)] == [AttemptState.COMPLETED]
    logs = {p.name: p.read_text() for p in (home / "slurm").glob(f"*/*/logs/{job.backend_id}_*_log.out")}
    assert sorted(logs) == [f"{job.backend_id}_0_log.out", f"{job.backend_id}_1_log.out"], "one log per task"
    assert "rank 0/2" in logs[f"{job.backend_id}_0_log.out"] and "rank 1/2" in logs[f"{job.backend_id}_1_log.out"]
    assert "knn_top1" in store.final_metrics("ddp")[job.job_hash]


def test_out_of_memory_is_recorded_and_counted_as_a_failure(tmp_path: Path, home: Path, digits: Path) -> None:
    grid = write_grid(tmp_path / "grid.toml", "oom", digits, budget=0, methods="[methods.supervised]",
                      resources="mem_gb = 0.2")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)
    store = Fresh(db)
    (job,) = store.jobs("oom")
    assert job.state == JobState.FAILED and job.failure_count == 1
    (a,) = store.attempts(job.job_hash)
    assert a.state == AttemptState.OUT_OF_MEMORY, a.exit_reason
    assert "memory" in (a.exit_reason or "").lower()


GRAPH_METHODS = """
[methods.supervised]
lr = 0.1
[methods.ft]
method = "supervised"
lr = 0.02
init = { from = "supervised" }
"""


def test_a_failed_parent_leaves_its_child_never_satisfied_until_retried(tmp_path: Path, home: Path,
                                                                        digits: Path) -> None:
    """A two-level graph is queued at once (``launch`` returns; the child's array waits on the parent's).
    The parent's first attempt fails (test-only hook): SLURM keeps its child pending with
    DependencyNeverSatisfied; the refresh records PARENT_FAILED (budget 0) and cancels the child's task;
    ``retry`` of the parent brings the child back and ``launch --wait`` re-links and completes both."""
    from orchestrator.grid import expand, load_grid
    from subsets import DatasetMeta

    grid = write_grid(tmp_path / "grid.toml", "relink", digits, budget=0, methods=GRAPH_METHODS)
    specs = {ej.config_name: ej.spec for ej in expand(load_grid(grid), DatasetMeta.load(digits))}
    fail_dir = tmp_path / "fail"
    fail_dir.mkdir()
    (fail_dir / f"{specs['supervised'].job_hash}.fail").touch()
    os.environ["DLTH_TEST_FAIL_ONCE"] = str(fail_dir)  # sbatch passes the environment to the tasks
    try:
        db = f"sqlite:///{tmp_path / 'db.sqlite'}"
        cli("launch", str(grid), "--cluster", "slurm", "--no-progress", db=db)
        store = Fresh(db)
        parent_id = store.job(specs["supervised"].job_hash).backend_id
        child = store.job(specs["ft@supervised"].job_hash)
        child_id = child.backend_id
        assert parent_id and child_id and child.state == JobState.WAITING  # queued at once, held by SLURM
        assert child_id.split("_")[0] != parent_id.split("_")[0]
        deps = subprocess.run(["squeue", "-h", "-r", "-j", child_id, "-o", "%E"], capture_output=True,
                              text=True).stdout
        assert parent_id.split("_")[0] in deps, deps  # afterok/aftercorr on the parent's array

        def reason() -> str:
            return subprocess.run(["squeue", "-h", "-r", "-j", child_id, "-o", "%r"], capture_output=True,
                                  text=True).stdout.strip()

        wait_for("the child to wait on a dependency that can never be met",
                 lambda: reason() == "DependencyNeverSatisfied", 300)
        assert (fail_dir / f"{specs['supervised'].job_hash}.failed").exists()
        out = cli("status", "relink", db=db).stdout
        assert "PARENT_FAILED" in out and "FAILED after 1 failures" in out, out
        assert store.job(specs["ft@supervised"].job_hash).state == JobState.PARENT_FAILED
        wait_for("the child's pending task to be cancelled", lambda: reason() == "", 60)
        out = cli("retry", "relink", db=db).stdout
        assert "1 jobs reset to PENDING (1 dependent jobs waiting for them again)" in out, out
        cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)
    finally:
        os.environ.pop("DLTH_TEST_FAIL_ONCE", None)
    parent, child = (store.job(specs[c].job_hash) for c in ("supervised", "ft@supervised"))
    assert (parent.state, child.state) == (JobState.COMPLETED, JobState.COMPLETED)
    assert child.backend_id != child_id  # resubmitted against the parent's new task
    p_attempts, (c_attempt,) = store.attempts(parent.job_hash), store.attempts(child.job_hash)
    assert [a.state for a in p_attempts] == [AttemptState.FAILED, AttemptState.COMPLETED]
    assert c_attempt.started_at >= p_attempts[-1].ended_at


def test_a_parent_retried_within_its_budget_gets_its_pending_child_relinked(tmp_path: Path, home: Path,
                                                                            digits: Path) -> None:
    """Within the failure budget ``launch --wait`` resubmits the failed parent by itself; the child, left
    pending by SLURM (DependencyNeverSatisfied), is cancelled and resubmitted against the new parent task."""
    from orchestrator.grid import expand, load_grid
    from subsets import DatasetMeta

    grid = write_grid(tmp_path / "grid.toml", "inbudget", digits, budget=1, methods=GRAPH_METHODS)
    specs = {ej.config_name: ej.spec for ej in expand(load_grid(grid), DatasetMeta.load(digits))}
    fail_dir = tmp_path / "fail"
    fail_dir.mkdir()
    (fail_dir / f"{specs['supervised'].job_hash}.fail").touch()
    os.environ["DLTH_TEST_FAIL_ONCE"] = str(fail_dir)
    try:
        db = f"sqlite:///{tmp_path / 'db.sqlite'}"
        cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)
    finally:
        os.environ.pop("DLTH_TEST_FAIL_ONCE", None)
    store = Fresh(db)
    parent, child = (store.job(specs[c].job_hash) for c in ("supervised", "ft@supervised"))
    assert (parent.state, child.state) == (JobState.COMPLETED, JobState.COMPLETED)
    assert [a.state for a in store.attempts(parent.job_hash)] == [AttemptState.FAILED, AttemptState.COMPLETED]
    (c_attempt,) = store.attempts(child.job_hash)
    assert c_attempt.started_at >= store.attempts(parent.job_hash)[-1].ended_at
    # the child's first task (on the failed parent) never ran: cancelled when it was re-linked
    first = sorted(p for p in submission_dirs(home) if json.loads((p / "manifest.json").read_text())["tasks"][0]
                   ["job_hash"] == child.job_hash)
    assert len(first) == 2, first
    old_id = (first[0] / "array_id").read_text().strip()
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", old_id, "-o", "State"], capture_output=True,
                         text=True).stdout
    assert out.split() and all(s.startswith("CANCELLED") for s in out.splitlines()), out  # "CANCELLED by 0"
