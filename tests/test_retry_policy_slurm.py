"""Retries that read the failure, on the real SLURM clusters of ``scripts/slurm-cluster.sh``.

Real: the out-of-memory kill (``JobAcctGatherParams=OverMemoryKill`` on the single-node cluster), the
retry's sbatch, the partition limits read with ``scontrol``, the node exclusion on the two-node cluster.
Driven through the reconcile's verdict instead (said in each test): a time limit hit without a checkpoint
(a real one costs minutes: SLURM limits are whole minutes), and the exclusion's rules (the last node of a
partition is kept) on attempts in a real database with the partition's node count mocked.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from db import AttemptState, JobState, Store
from orchestrator.backends import slurm_retry
from orchestrator.grid import expand, load_grid
from orchestrator.launch import record_grid
from specs.job import JobSpec
from subsets import DatasetMeta
from tests import test_slurm_backend as sb
from tests import test_slurm_multinode as tm
from tests.test_slurm_backend import GRID, Fresh, cli, submission_dirs, write_grid
from tests.test_slurm_multinode import NODES, cli2, shared_digits, slurm_cluster2
from workers.test_hooks import EXCLUDE_ENV

home, slurm_cluster = sb.home, sb.slurm_cluster  # the real clusters' fixtures
home2 = tm.home2
_ = (shared_digits, slurm_cluster2)


def test_partition_limits_from_scontrol(slurm_cluster: None) -> None:
    real = subprocess.run(["scontrol", "show", "partition", "-o"], capture_output=True, text=True,
                          check=True).stdout
    parts = slurm_retry.parse_partitions(real)
    assert parts["debug"] == parts[""] == slurm_retry.PartitionLimits(None, None, 1)  # the test cluster: unlimited
    line = "PartitionName=gpu Default=NO MaxTime=1-00:00:00 MaxMemPerNode=8000 State=UP TotalNodes=12"
    assert slurm_retry.parse_partitions(line)["gpu"] == slurm_retry.PartitionLimits(8000, 1440, 12)


def test_timeout_without_checkpoint_gets_more_time_within_maxtime(tmp_path: Path, monkeypatch) -> None:
    """The reconcile's verdict given directly (a real time limit costs minutes: SLURM limits are whole ones)."""
    monkeypatch.setattr(slurm_retry, "partition_limits", lambda p: slurm_retry.PartitionLimits(None, 25))
    manifest = {"time_min": 10, "mem": "1024M", "partition": "gpu"}
    line = slurm_retry.on_failure("h", tmp_path, AttemptState.TIMEOUT, manifest, checkpointed=False)
    assert line == "time limit of 10 min hit without a checkpoint: the retry asks for 20 min"
    line = slurm_retry.on_failure("h", tmp_path, AttemptState.TIMEOUT, {**manifest, "time_min": 20},
                                  checkpointed=False)
    assert line == ("time limit of 20 min hit without a checkpoint: the retry asks for 25 min "
                    "(capped by the partition's MaxTime)")
    assert slurm_retry.load(tmp_path).time_min == 25
    # a time limit that checkpointed (the worker recorded its stop) and a preemption change nothing
    assert slurm_retry.on_failure("h", tmp_path, AttemptState.TIMEOUT, manifest,
                                  checkpointed=True) is None
    assert slurm_retry.on_failure("h", tmp_path, AttemptState.PREEMPTED, manifest,
                                  checkpointed=False) is None
    assert slurm_retry.load(tmp_path).time_min == 25


def test_two_failures_on_one_node_exclude_it(tmp_path: Path, digits: Path, monkeypatch) -> None:
    """Attempts recorded in a real database with the two-node cluster's node names (as its workers record
    them); the partition's node count mocked (2, then 1)."""
    grid = write_grid(tmp_path / "grid.toml", "excl", digits, methods="[methods.supervised]")
    monkeypatch.setenv("DLTH_HOME", str(tmp_path / "ws"))
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    record_grid(store, load_grid(grid), DatasetMeta.load(digits))
    (job,) = store.jobs("excl")
    for node in ("dlth2-n1", "dlth2-n2", "dlth2-n1"):
        attempt = store.claim(job.job_hash, backend="slurm", backend_id="1_0", host="vm", pid=1)
        store.set_attempt_code(attempt, None, node)
        store.finish_attempt(attempt, AttemptState.FAILED, reason="boom")
        store.set_state([job.job_hash], JobState.PENDING, [JobState.FAILED])  # retried
    (job,) = store.jobs("excl")
    two = slurm_retry.PartitionLimits(total_nodes=2)
    limits = {"": slurm_retry.PartitionLimits(total_nodes=1)}
    monkeypatch.setattr(slurm_retry, "partition_limits", lambda p: limits.get(p, two))
    assert slurm_retry.exclude_failed_nodes(store, job, "") == []  # the partition's only node: kept
    assert slurm_retry.exclude_failed_nodes(store, job, "debug") == ["dlth2-n1"]
    assert slurm_retry.load(job.job_dir).notes == ["failed 2 times on dlth2-n1: the retries exclude it"]
    spec = JobSpec.from_json(job.spec_json)
    adjusted = slurm_retry.adjusted_spec(spec, job.job_dir, profile_exclude="bad7")
    assert adjusted.resources.slurm["exclude"] == "bad7,dlth2-n1"
    assert adjusted.job_hash == spec.job_hash == job.job_hash  # resources stay out of the identity


@pytest.mark.slurm
@pytest.mark.slow
def test_out_of_memory_retry_doubles_the_memory_up_to_the_profile_cap(tmp_path: Path, home: Path,
                                                                      digits: Path) -> None:
    """A real OOM kill (0.2 GB for a torch worker), then retries at 0.4 GB and at the cap, 0.5 GB."""
    grid = write_grid(tmp_path / "grid.toml", "oomretry", digits, budget=2, methods="[methods.supervised]",
                      resources="mem_gb = 0.2", cluster="max_mem_gb = 0.5")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = cli("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db, check=False)
    store = Fresh(db)
    (job,) = store.jobs("oomretry")
    attempts = store.attempts(job.job_hash)
    assert attempts[0].state == AttemptState.OUT_OF_MEMORY, attempts[0].exit_reason
    assert "out of memory at 0.2 GB: the retry asks for 0.4 GB" in (attempts[0].exit_reason or "")
    assert "Traceback" not in out.stderr, out.stderr
    asked = []
    for sub in submission_dirs(home):
        manifest = json.loads((sub / "manifest.json").read_text())
        if any(t["job_hash"] == job.job_hash for t in manifest["tasks"]):
            asked.append(manifest["mem"])
    assert asked == ["205M", "410M", "512M"][:len(asked)] and len(asked) == len(attempts) >= 2, (asked, attempts)
    if len(attempts) == 3:
        assert "0.5 GB (capped by the profile's max_mem_gb)" in (attempts[1].exit_reason or "")
        # the single node failed twice, but excluding it would leave the job nowhere to run
        assert slurm_retry.load(job.job_dir).exclude == []
    assert json.loads((Path(job.job_dir) / slurm_retry.ADJUST_FILE).read_text())["mem_gb"] >= 0.4
    assert job.state in (JobState.COMPLETED, JobState.FAILED), [a.exit_reason for a in attempts]
    assert len(store.jobs("oomretry")) == 1  # the same job (identity unchanged), retried with more memory


@pytest.mark.slurm
@pytest.mark.slow
def test_a_node_failed_twice_is_excluded_on_the_two_node_cluster(tmp_path: Path, home2: Path, shared_digits: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Real: the two-node cluster, the workers' failures (the test hook fails every attempt whose SLURM job
    excludes no node) and the retry's ``--exclude``: within three failures one node has failed twice, and
    the next attempt runs, excluded from it, on the other node."""
    text = GRID.format(name="excl2", root=shared_digits, epochs=1, budget=3, resources="", cluster="", subsets="",
                       methods="[methods.supervised]")
    grid = tmp_path / "grid.toml"
    grid.write_text(text.replace('profile = "slurm-local"', 'profile = "slurm-local2"'))
    (ej,) = expand(load_grid(grid), DatasetMeta.load(shared_digits))
    armed = tmp_path / "armed"
    armed.mkdir()
    (armed / f"{ej.spec.job_hash}.exclude").touch()
    monkeypatch.setenv(EXCLUDE_ENV, str(armed))  # sbatch passes the environment on to the tasks
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli2("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db, home=home2, timeout=900)
    store = Fresh(db)
    (job,) = store.jobs("excl2")
    attempts = store.attempts(job.job_hash)
    nodes = [c.node for c in store.attempt_codes([job.job_hash])[job.job_hash]]
    assert job.state == JobState.COMPLETED, [a.exit_reason for a in attempts]
    failed = [n for a, n in zip(attempts, nodes, strict=True) if a.state == AttemptState.FAILED]
    assert len(failed) == len(attempts) - 1 and 2 <= len(failed) <= 3
    (twice,) = {n for n in failed if failed.count(n) == 2}
    assert set(nodes) <= set(NODES) and nodes[-1] != twice  # the last attempt ran on the other node
    assert slurm_retry.load(job.job_dir).exclude == [twice]
    assert slurm_retry.load(job.job_dir).notes == [f"failed 2 times on {twice}: the retries exclude it"]
