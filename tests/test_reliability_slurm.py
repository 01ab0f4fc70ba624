"""Reliability and security on the real single-node SLURM cluster (and a private PostgreSQL server):

- a training file that breaks after launch fails every job in the worker: the breaker pauses the grid
  after the first attempts of N jobs, holds the pending SLURM tasks, and ``dlth-orch resume`` releases them;
- ``launch --wait`` and ``status`` ride out a real PostgreSQL restart (a private server of this test);
- the database password is in no command line (``ps``), no ``scontrol show job`` output and no file of the
  workspace once the grid is cancelled (its one 0600 settings file is removed then); everything in the
  workspace is private to the user.

Mocked: nothing. Skipped where the cluster cannot exist, like ``test_slurm_backend.py``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from db import JobState
from db.testing import private_postgres
from tests.test_slurm_backend import REPO, Fresh, cli, home, slurm_cluster, squeue_state, wait_for, write_grid

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
__all__ = ["home", "slurm_cluster"]  # fixtures used here
SIX_CONFIGS = "[methods.supervised]\nlr = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3]\n"


class StderrLines:
    """The stderr lines of a running process, read by a thread as they come (so that a test can act on a
    line as soon as it is printed, instead of sleeping and hoping)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stderr.readline, "")),
                                        daemon=True)
        self._thread.start()

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def finish(self, timeout: float) -> tuple[str, str]:
        """Wait for the process; (stdout, stderr)."""
        self.proc.wait(timeout)
        self._thread.join(10)
        return self.proc.stdout.read(), "".join(self.lines)


def held_reason(slurm_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-r", "-j", slurm_id, "-o", "%r"], capture_output=True,
                          text=True).stdout.strip()


def follower(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "DLTH_HEARTBEAT_S": "1", "COLUMNS": "400", **(env or {})})


@pytest.mark.postgres
def test_broken_file_trips_the_breaker_through_a_postgres_restart_and_the_password_stays_secret(
        tmp_path: Path, home: Path, digits: Path) -> None:
    """One grid of six jobs on a private PostgreSQL server whose URL holds a password; its training file
    breaks after launch. The follower (``launch --wait``), which reached the server before, rides out a
    restart of the server while the first workers run (a ``status`` started during it fails at once); the
    breaker pauses the grid after 2 jobs and holds the pending tasks; ``resume`` releases them. (One scenario
    for the four cases: SLURM tasks are slow to start here.)"""
    password = "Sekr3t-pw-4711"
    data = tmp_path / "digits"
    shutil.copytree(digits, data)
    grid = write_grid(tmp_path / "grid.toml", "brk", data, budget=0, methods=SIX_CONFIGS + "[breaker]\nthreshold = 2",
                      cluster="array_throttle = 2", resources="slurm = { hold = true }")
    with private_postgres() as server:
        url = server.url.replace("postgres@", f"postgres:{password}@")
        env = {"DLTH_DB": url, "DLTH_DB_WAIT_S": "120"}  # the URL comes from the environment, not argv
        follow = follower("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", env=env)
        follow_err = StderrLines(follow)
        store = Fresh(url)
        wait_for("the grid submitted (held)", lambda: len(store.jobs("brk", [JobState.QUEUED])) == 6, timeout=120)
        beton = data / "train.beton"
        beton.write_bytes(beton.read_bytes()[:5000])  # broken after launch: only the workers can find out
        array = store.jobs("brk")[0].backend_id.split("_")[0]
        subprocess.run(["scontrol", "release", array], check=True)

        def a_worker_in_ps() -> bool:
            ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            assert password not in ps
            return "workers.entry" in ps

        wait_for("a worker process", a_worker_in_ps, timeout=180, every=0.3)
        show = subprocess.run(["scontrol", "show", "job", array], capture_output=True, text=True).stdout
        assert "JobId" in show and password not in show

        server.stop()  # a PostgreSQL restart while the follower and the workers run
        # a new `status` has never reached this database: one line at once, exit 2 (it waits for none)
        s_out, s_err = StderrLines(follower("status", "brk", env=env)).finish(timeout=180)
        assert s_err.startswith("error: database ") and s_err.count("\n") == 1, s_out + s_err
        assert "waiting up to" not in s_err and password not in s_err, s_err
        wait_for("the follower waiting for the database", lambda: follow_err.saw("waiting up to"), timeout=120,
                 every=0.2)
        server.start()  # back as soon as the follower noticed that it was gone

        out, err = follow_err.finish(timeout=300)
        assert follow.returncode == 3, out + err  # paused
        assert err.count("waiting up to") == 1, err  # it said once that it waited for the database
        paused = [ln for ln in (out + err).splitlines() if ln.startswith("PAUSED")]
        assert len(paused) == 1 and "dlth-orch resume brk" in paused[0], out + err
        assert f"data file unreadable: {beton}: ValueError" in paused[0]
        jobs = store.jobs("brk")
        failed = [j for j in jobs if j.state == JobState.FAILED]
        queued = [j for j in jobs if j.state == JobState.QUEUED]
        assert 2 <= len(failed) <= 4 and len(failed) + len(queued) == 6, [(j.state, j.last_error) for j in jobs]
        for j in failed:
            (a,) = store.attempts(j.job_hash)
            assert a.exit_reason == j.last_error and "\n" not in a.exit_reason
            assert a.exit_reason.startswith(f"data file unreadable: {beton}: ValueError"), a.exit_reason
            assert "Traceback" in Path(a.log_path).read_text()  # the traceback is kept in the log
        # held (JobHeldAdmin when the holder is root, as here; JobHeldUser for a user), never cancelled
        assert all(held_reason(j.backend_id).startswith("JobHeld") for j in queued), [held_reason(j.backend_id)
                                                                                      for j in queued]
        status = follower("status", "brk", env=env)
        assert status.wait(120) == 0 and "PAUSED" in status.communicate()[0]

        shutil.copy(digits / "train.beton", beton)  # the fix
        before = [(j.state, j.backend_id) for j in store.jobs("brk")]
        out = cli("resume", "brk", db=url).stdout
        assert f"{len(queued)} SLURM tasks released" in out, (out, before)  # every task the breaker held
        assert not any(held_reason(j.backend_id).startswith("JobHeld") for j in queued)
        cli("cancel", "brk", "--yes", db=url)  # the released tasks would now train; not needed here
        wait_for("SLURM done with the grid", lambda: not any(squeue_state(j.backend_id) for j in jobs), timeout=60)

    leaks, loose = [], []
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077 and not path.is_symlink():  # submitit links the submission file (links are 777)
            loose.append(f"{path} {mode:o}")
        if path.is_file() and password.encode() in path.read_bytes():
            leaks.append(f"{path} {mode:o}")
    assert not loose, loose
    assert not leaks, leaks  # the grid's 0600 settings file held it until `cancel` removed it


def test_a_grid_launched_without_wait_pauses_itself_without_any_status(tmp_path: Path, home: Path,
                                                                        digits: Path) -> None:
    """Three jobs whose first attempts all fail the same way (test-only hook), one task at a time, launched
    with ``--no-wait``: nobody runs ``status``. The second worker to fail trips the breaker; the task that
    starts afterwards refuses to train and hands its job back (no attempt, its failure still armed)."""
    from orchestrator.grid import expand, load_grid
    from subsets import DatasetMeta

    grid = write_grid(tmp_path / "grid.toml", "nowait", digits, budget=0,
                      methods="[methods.supervised]\nlr = [0.01, 0.02, 0.05]\n[breaker]\nthreshold = 2",
                      cluster="array_throttle = 1")
    fail_dir = tmp_path / "fail"
    fail_dir.mkdir()
    for ej in expand(load_grid(grid), DatasetMeta.load(digits)):
        (fail_dir / f"{ej.spec.job_hash}.fail").touch()
    os.environ["DLTH_TEST_FAIL_ONCE"] = str(fail_dir)  # sbatch passes the environment to the tasks
    try:
        db = f"sqlite:///{tmp_path / 'db.sqlite'}"
        cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    finally:
        os.environ.pop("DLTH_TEST_FAIL_ONCE", None)
    store = Fresh(db)
    jobs = store.jobs("nowait")
    wait_for("SLURM done with the grid's three tasks", lambda: not any(squeue_state(j.backend_id) for j in jobs),
             timeout=600, every=2)
    state = store.breaker_state("nowait")
    assert state.paused and state.by.startswith("the worker of job "), state
    tried = {j.job_hash: store.attempts(j.job_hash) for j in store.jobs("nowait")}
    failed = [h for h, attempts in tried.items() if attempts]
    assert len(failed) == 2 and sorted(state.jobs) == sorted(failed), tried
    assert all([a.state for a in tried[h]] == ["FAILED"] for h in failed)
    assert "InjectedFailure" in state.error
    assert sorted(p.suffix for p in fail_dir.iterdir()) == [".fail", ".failed", ".failed"]
