"""Retries that read the failure, on the real single-node SLURM cluster (``scripts/slurm-cluster.sh``).

Real: the out-of-memory kill (``JobAcctGatherParams=OverMemoryKill`` on the test cluster), the retry's
sbatch, the partition limits read with ``scontrol``. Driven through the reconcile input instead (sacct
lines written here, said in each test): a time limit hit without a checkpoint (a real one costs minutes:
SLURM limits are whole minutes) and two failures on one node (the node exclusion's bookkeeping; the real
``--exclude`` is passed to sbatch in the OOM test's retry only if a node failed twice).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from db import AttemptState, JobState
from orchestrator.backends import slurm_retry
from orchestrator.backends.slurm_sacct import parse_sacct
from tests import test_slurm_backend as sb
from tests.test_expand import _spec as _expand_spec
from tests.test_slurm_backend import Fresh, cli, submission_dirs, write_grid

home, slurm_cluster = sb.home, sb.slurm_cluster  # the real cluster's fixtures
SACCT_LINE = "{sid}|{state}|0:9|2026-12-06T06:00:00|2026-12-06T06:00:01|2026-12-06T06:10:01|00:10:00|00:10:00|{node}|/x"


def _run(state: str, node: str = "dlth2-n1"):
    (run,) = parse_sacct(SACCT_LINE.format(sid="77_0", state=state, node=node))
    return run


def test_partition_limits_from_scontrol(slurm_cluster: None) -> None:
    real = subprocess.run(["scontrol", "show", "partition", "-o"], capture_output=True, text=True,
                          check=True).stdout
    parts = slurm_retry.parse_partitions(real)
    assert parts["debug"] == parts[""] == slurm_retry.PartitionLimits(None, None, 1)  # the test cluster: unlimited
    line = "PartitionName=gpu Default=NO MaxTime=1-00:00:00 MaxMemPerNode=8000 State=UP TotalNodes=12"
    assert slurm_retry.parse_partitions(line)["gpu"] == slurm_retry.PartitionLimits(8000, 1440, 12)


def test_timeout_without_checkpoint_gets_more_time_within_maxtime(tmp_path: Path, monkeypatch) -> None:
    """Reconcile input mocked (a sacct line): a real time limit costs minutes."""
    monkeypatch.setattr(slurm_retry, "partition_limits", lambda p: slurm_retry.PartitionLimits(None, 25))
    manifest = {"time_min": 10, "mem": "1024M", "partition": "gpu"}
    line = slurm_retry.on_failure("h", tmp_path, AttemptState.TIMEOUT, _run("TIMEOUT"), manifest, checkpointed=False)
    assert line == "time limit of 10 min hit without a checkpoint: the retry asks for 20 min"
    line = slurm_retry.on_failure("h", tmp_path, AttemptState.TIMEOUT, _run("TIMEOUT"), {**manifest, "time_min": 20},
                                  checkpointed=False)
    assert line == ("time limit of 20 min hit without a checkpoint: the retry asks for 25 min "
                    "(capped by the partition's MaxTime)")
    assert slurm_retry.load(tmp_path).time_min == 25
    # a time limit that checkpointed (the worker recorded its stop) and a preemption change nothing
    assert slurm_retry.on_failure("h", tmp_path, AttemptState.TIMEOUT, _run("TIMEOUT"), manifest,
                                  checkpointed=True) is None
    assert slurm_retry.on_failure("h", tmp_path, AttemptState.PREEMPTED, _run("PREEMPTED"), manifest,
                                  checkpointed=False) is None
    assert slurm_retry.load(tmp_path).time_min == 25


def test_two_failures_on_one_node_exclude_it(tmp_path: Path, monkeypatch) -> None:
    """Reconcile input mocked (sacct lines naming the two-node cluster's nodes)."""
    monkeypatch.setattr(slurm_retry, "partition_limits", lambda p: slurm_retry.PartitionLimits())
    on = slurm_retry.on_failure
    assert on("h", tmp_path, AttemptState.FAILED, _run("FAILED", "dlth2-n1"), {}, checkpointed=False) is None
    assert on("h", tmp_path, AttemptState.FAILED, _run("FAILED", "dlth2-n2"), {}, checkpointed=False) is None
    assert on("h", tmp_path, AttemptState.NODE_FAIL, _run("NODE_FAIL", "dlth2-n1"), {}, checkpointed=False) \
        == "failed 2 times on dlth2-n1: the retries exclude it"
    on("h", tmp_path, AttemptState.FAILED, _run("FAILED", "dlth2-n[1-2]"), {}, checkpointed=False)  # 2 nodes: neither
    assert slurm_retry.load(tmp_path).exclude == ["dlth2-n1"]
    spec = _expand_spec()
    adjusted = slurm_retry.adjusted_spec(spec, tmp_path, profile_exclude="bad7")
    assert adjusted.resources.slurm["exclude"] == "bad7,dlth2-n1"
    assert adjusted.job_hash == spec.job_hash  # resources stay out of the identity


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
        assert "failed 2 times on vm: not excluded (no other node is left)" in (attempts[1].exit_reason or "")
    assert json.loads((Path(job.job_dir) / slurm_retry.ADJUST_FILE).read_text())["mem_gb"] >= 0.4
    assert job.state in (JobState.COMPLETED, JobState.FAILED), [a.exit_reason for a in attempts]
    assert len(store.jobs("oomretry")) == 1  # the same job (identity unchanged), retried with more memory
