"""Frozen code on the real SLURM cluster, with real training on the digits: an array launched on hold keeps
the launch's code while the repository breaks; ``launch --code current`` after a fix re-points only the job
that has not started; each attempt records its code version and SLURM node; ``show`` and the report name
the commits and the report warns that the results mix them; ``retry --stale`` resets the old one.

Launched from a copy of the repository committed to a temporary git repository (never the real checkout).
Skipped only where the cluster cannot exist (see tests/test_slurm_backend.py). Mocked: nothing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from db import JobState

from .test_frozen_local import BREAK, frozen_grid, git, repo_copy, run_from
from .test_slurm_backend import Fresh, home, slurm_cluster, wait_for  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CLUSTER = """slurm = { hold = true }
[cluster]
profile = "slurm-local"
poll_min_s = 0.5
poll_max_s = 3.0
"""  # the first line still belongs to [resources]: every task is submitted held


def release(slurm_id: str) -> None:
    subprocess.run(["scontrol", "release", slurm_id], check=True, capture_output=True, text=True)


def test_slurm_jobs_keep_their_code_until_code_current_repoints_the_unstarted(tmp_path: Path, home: Path,  # noqa: F811
                                                                             digits: Path) -> None:
    repo, first_commit = repo_copy(tmp_path / "repo")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    grid = tmp_path / "grid.toml"
    grid.write_text(frozen_grid(digits, "[0.01, 0.2]", cluster=CLUSTER))
    run_from(repo, "launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", home=home, db=db)
    store = Fresh(db)
    (s1,) = [la.code_hash for la in store.launches("frozen")]
    first, second = store.jobs("frozen")  # lr=0.01, lr=0.2: one held array
    assert {first.state, second.state} == {JobState.QUEUED}

    train = repo / "workers" / "train.py"
    original = train.read_text()
    train.write_text(BREAK + original)  # the live tree no longer imports
    release(first.backend_id)
    wait_for("the first job to complete on the launch-time code",
             lambda: store.job(first.job_hash).state in (JobState.COMPLETED, JobState.FAILED), timeout=400)
    assert store.job(first.job_hash).state == JobState.COMPLETED, store.job(first.job_hash).last_error

    train.write_text(original + "# fixed\n")
    git(repo, "commit", "-qam", "the fix")
    second_commit = git(repo, "rev-parse", "HEAD")
    run_from(repo, "launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", "--code", "current",
             home=home, db=db)
    s2 = store.launches("frozen")[-1].code_hash
    assert s2 != s1 and store.code_of([first.job_hash, second.job_hash]) == {first.job_hash: s1,
                                                                             second.job_hash: s2}
    release(second.backend_id)  # submitted before the fix: the task reads its job's code when it starts
    wait_for("the second job to complete on the fixed code",
             lambda: store.job(second.job_hash).state in (JobState.COMPLETED, JobState.FAILED), timeout=400)
    assert store.job(second.job_hash).state == JobState.COMPLETED, store.job(second.job_hash).last_error
    ran = store.attempt_codes([first.job_hash, second.job_hash])
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True).stdout.split()
    assert [(c.code_hash, c.node in node) for c in ran[first.job_hash]] == [(s1, True)]
    assert [(c.code_hash, c.node in node) for c in ran[second.job_hash]] == [(s2, True)]

    view = json.loads(run_from(repo, "show", second.job_hash[:10], "--json", home=home, db=db).stdout)
    assert view["attempts"][0]["code"] == s2 and view["code_versions"][s2]["commit"] == second_commit
    report = json.loads(run_from(repo, "report", "frozen", "--json", home=home, db=db).stdout)
    # by code hash: the order of versions is not the claim (a list comparison flaked once under load)
    versions = {v["code_hash"]: (v["commit"], v["jobs"], v["newest"]) for v in report["code_versions"]}
    assert len(report["code_versions"]) == 2 and versions == {s1: (first_commit, 1, False),
                                                               s2: (second_commit, 1, True)}
    (warning,) = [w for w in report["warnings"] if "mix 2 code versions" in w]
    assert "stale: full/supervised[lr=0.01]/s0" in warning and "dlth-orch retry frozen --stale" in warning

    out = run_from(repo, "retry", "frozen", "--stale", home=home, db=db).stdout
    assert out.startswith("1 stale jobs reset")
    assert store.job(first.job_hash).state == JobState.PENDING
    assert store.code_of([first.job_hash]) == {first.job_hash: None}
    assert (Path(first.job_dir) / "stale" / s1 / "final_metrics.json").is_file()
    assert store.job(second.job_hash).state == JobState.COMPLETED
