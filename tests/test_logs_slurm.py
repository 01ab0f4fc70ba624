"""``dlth-orch logs`` on the real SLURM cluster: a one-job grid requeued with ``scontrol requeue`` (same SLURM
id, submitit's log files appended to) read back as two attempts, and followed with ``-f`` through the requeue;
both attempts' workers recorded their resource use."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from workers.test_hooks import EPOCH_SAVED, PAUSE_ENV

from .test_slurm_backend import (
    REPO,
    Fresh,
    cli,
    home,
    release_requeued,
    signal_paused_worker,
    slurm_cluster,
    wait_for,
    write_grid,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures(home.__name__)]
__all__ = ["slurm_cluster"]  # the fixture ``home`` needs
HEADER = re.compile(r"^==> attempt (\d+) on (\S+) at .* \(slurm ([^,)]+)", re.MULTILINE)


def test_logs_follow_a_slurm_job_through_scontrol_requeue(tmp_path: Path, digits: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The requeue lands while the worker stands paused after its first epoch (``DLTH_TEST_PAUSE``)."""
    from orchestrator.grid import expand, load_grid
    from subsets import DatasetMeta

    grid = write_grid(tmp_path / "grid.toml", "logsq", digits, epochs=2, methods="[methods.supervised]")
    (spec,) = (ej.spec for ej in expand(load_grid(grid), DatasetMeta.load(digits)))
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    (pauses / f"{spec.job_hash}.{EPOCH_SAVED}").touch()
    monkeypatch.setenv(PAUSE_ENV, str(pauses))  # sbatch passes the environment to the tasks
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db)
    store = Fresh(db)
    (job,) = store.jobs("logsq")
    sid = job.backend_id
    wait_for("the worker's attempt", lambda: store.attempts(job.job_hash), timeout=240)
    follow = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "logs", job.job_hash[:12], "-f",
                               "--interval", "0.3", "--db", db], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=REPO, env={**os.environ})
    try:
        signal_paused_worker(Path(os.environ["DLTH_HOME"]), sid, pauses / f"{spec.job_hash}.{EPOCH_SAVED}.paused",
                             ["scontrol", "requeue", sid], "SIGTERM")
        release_requeued(sid)
        cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db)  # to the end
        followed, _ = follow.communicate(timeout=120)
    finally:
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode == 0, followed[-3000:]
    heads = HEADER.findall(followed)
    assert [h[0] for h in heads] == ["1", "2"] and {h[2] for h in heads} == {sid}, followed[-3000:]
    after = followed.split("==> attempt 2", 1)[1]
    assert "resuming from" in after and "epoch 2/2" in after

    out = cli("logs", job.job_hash[:12], db=db).stdout
    heads = HEADER.findall(out)
    assert [h[0] for h in heads] == ["1", "2"], out[-3000:]
    first, second = out.split("==> attempt 2", 1)
    assert "resuming from" not in first and "epoch 1/2" in first and "epoch 2/2" not in first
    assert "resuming from" in second and "epoch 2/2" in second
    assert "Starting with JobEnvironment" in first and "Starting with JobEnvironment" in second  # SLURM's files
    # each attempt's worker (rank 0, on the SLURM node) recorded what it used, the requeued one included
    usage = [a.usage for a in store.attempts(job.job_hash)]
    assert all(u is not None and u.source == "worker" and u.cpu_time_s > 0 and u.max_rss_mb > 100 for u in usage)
