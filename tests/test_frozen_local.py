"""Frozen code on the local backend, with real training on the digits: a recorded job keeps its launch's
code through a plain relaunch, ``launch --code current`` re-points it while it has not started, and it
trains on that code even after the repository changed so that importing it fails; its attempt records its
code version and node; ``show`` and the report name the commit.

The launch runs from a copy of the repository committed to a temporary git repository, never from the
real checkout (which the test must not break). Mocked: nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from db import AttemptState, JobState, Store

from .grids import tiny_grid

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BREAK = "raise ImportError('broken on purpose: the live tree changed after launch')\n"


def frozen_grid(root: Path, lrs: str, cluster: str = "") -> str:
    """The one-method grid of these tests (``lrs``: its TOML list of learning rates)."""
    return tiny_grid("frozen", root, lr=0.05, knn_k=10, tables=cluster,
                     methods=f"[methods.supervised]\nlr = {lrs}\n")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def repo_copy(dst: Path) -> tuple[Path, str]:
    """A copy of this repository's code committed to a fresh git repository; returns it and the commit."""
    shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "tests", "benchmarks",
                                                             ".dlth", "*.egg-info", ".*_cache", "data", "runs"))
    git(dst, "init", "-q")
    git(dst, "add", "-A")
    git(dst, "commit", "-qm", "launch-time code")
    return dst, git(dst, "rev-parse", "HEAD")


def run_from(repo: Path, *args: str, home: Path, db: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``dlth-orch ARGS`` run from ``repo`` (its code first on the path), in workspace ``home``."""
    env = {**os.environ, "PYTHONPATH": str(repo), "DLTH_HOME": str(home), "DLTH_HEARTBEAT_S": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--db", db], capture_output=True,
                          text=True, env=env, cwd=repo, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def launches_of(db: str, grid: str) -> list[str]:
    with Store(db) as store:
        return [la.code_hash for la in store.launches(grid)]


RECORD_ONLY = """
import sys
from pathlib import Path
from db import workspace_dir
from orchestrator import launch as pipeline
from orchestrator.cli_common import open_store
from orchestrator.provenance.freeze import freeze, read_source

grid_file, db, code = sys.argv[1:4]
source = read_source()
v = pipeline.validate(Path(grid_file), "local", None)
meta = pipeline.prepare_data(v)
frozen = freeze(workspace_dir(), source, code=code)
print(frozen.describe(), file=sys.stderr)
store = open_store(db, create=True)
with pipeline.holding_grid(store, v.grid.name):
    pipeline.record_grid(store, v.grid, meta)
    frozen.record(store, v.grid.name)
"""


def record_only(repo: Path, grid: Path, *, code: str = "launch", home: Path, db: str) -> subprocess.CompletedProcess:
    """What ``launch`` does before it runs anything (validate, snapshot, record and point the jobs, under the
    grid's lock), from ``repo``'s code, leaving the jobs PENDING: a launch whose jobs have not started yet."""
    env = {**os.environ, "PYTHONPATH": str(repo), "DLTH_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", RECORD_ONLY, str(grid), db, code], capture_output=True, text=True,
                          env=env, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_local_jobs_run_their_pointed_code_after_the_tree_breaks(tmp_path: Path, digits: Path) -> None:
    repo, first_commit = repo_copy(tmp_path / "repo")
    home, db = tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}"
    grid = tmp_path / "grid.toml"
    grid.write_text(frozen_grid(digits, "[0.2]"))
    train = repo / "workers" / "train.py"
    original = train.read_text()
    first = record_only(repo, grid, home=home, db=db)  # recorded, not started
    (s1,) = launches_of(db, "frozen")
    assert f"code {s1} (new snapshot, commit {first_commit[:12]})" in first.stderr
    with Store(db) as store:
        (job,) = store.jobs("frozen")
        assert job.state == JobState.PENDING and store.code_of([job.job_hash]) == {job.job_hash: s1}
    train.write_text(original + "# a fix\n")
    record_only(repo, grid, home=home, db=db)  # a plain relaunch keeps the job's code
    with Store(db) as store:
        assert store.code_of([job.job_hash]) == {job.job_hash: s1}
    git(repo, "commit", "-qam", "the fix")
    fix_commit = git(repo, "rev-parse", "HEAD")
    record_only(repo, grid, code="current", home=home, db=db)  # ...--code current moves it
    s2 = launches_of(db, "frozen")[-1]
    with Store(db) as store:
        assert s2 != s1 and store.code_of([job.job_hash]) == {job.job_hash: s2}

    train.write_text(BREAK + original)  # the live tree no longer imports
    again = run_from(repo, "launch", str(grid), "--no-progress", home=home, db=db)
    warning = [line for line in again.stderr.splitlines() if "uncommitted" in line]
    assert len(warning) == 1 and warning[0].endswith("workers/train.py"), again.stderr
    broken = launches_of(db, "frozen")[-1]
    assert sorted(p.name for p in (home / "code").iterdir()) == sorted({s1, s2, broken})  # one copy per content
    with Store(db) as store:
        job = store.job(job.job_hash)
        assert job.state == JobState.COMPLETED, job.last_error  # trained with its pointed code, not the live tree
        (attempt,) = store.attempts(job.job_hash)
        (ran,) = store.attempt_codes([job.job_hash])[job.job_hash]
        assert attempt.state == AttemptState.COMPLETED and (ran.code_hash, ran.node) == (s2, socket.gethostname())
        last = store.launches("frozen")[-1]
        assert last.git_dirty and last.git_changed == ("workers/train.py",) and BREAK.strip() in last.git_diff
        assert last.packages["torch"] and last.python and "launch" in last.command_line

    view = json.loads(run_from(repo, "show", "full/supervised[lr=0.2]/s0", "--json", home=home, db=db).stdout)
    assert view["attempts"][0]["code"] == s2 and view["code_versions"][s2]["commit"] == fix_commit
    assert view["files"]["final_metrics"] and view["final_metrics"]["knn_top1"] > 0
    shown = run_from(repo, "show", job.job_hash[:8], home=home, db=db).stdout
    assert f"{s2} ({fix_commit[:12]})" in shown
    report = json.loads(run_from(repo, "report", "frozen", "--json", home=home, db=db).stdout)
    assert [(v["code_hash"], v["commit"], v["jobs"]) for v in report["code_versions"]] == [(s2, fix_commit, 1)]
    assert not any("code versions" in w for w in report["warnings"])
