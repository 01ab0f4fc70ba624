"""Multi-node jobs on the real two-node SLURM cluster of ``scripts/slurm-cluster.sh up --nodes 2``.

The cluster's two nodes (dlth2-n1, dlth2-n2) are two ``slurmd -N`` daemons of this one machine, each with
its own address (127.0.0.11/.12): SLURM places ranks, sets the node environment and starts, signals,
requeues and kills tasks per node for real. What cannot exist here is a second physical machine: both
nodes share this machine's CPUs, file system and network stack. Skipped only where the cluster cannot
exist (not root, no SLURM packages); never under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from db import AttemptState, JobState, Store
from tests.test_slurm_backend import GRID, REPO, Fresh, _cannot_run, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SLURM_CONF2 = "/etc/slurm-dlth2/slurm.conf"
ENV2 = {**os.environ, "SLURM_CONF": SLURM_CONF2}
NODES = ("dlth2-n1", "dlth2-n2")


@pytest.fixture(scope="session")
def slurm_cluster2() -> None:
    reason = _cannot_run()
    if reason:
        pytest.skip(reason)
    subprocess.run(["bash", str(REPO / "scripts" / "slurm-cluster.sh"), "up", "--nodes", "2"], check=True,
                   timeout=300)


@pytest.fixture(scope="module")
def shared_digits(digits: Path) -> Iterator[Path]:
    """The digits on a path every node shares: the session's copy lies under /tmp, which the pre-flight
    rightly refuses on a two-node cluster (node-local); the two nodes here share this machine's disk."""
    root = Path(tempfile.mkdtemp(prefix="dlth-shared-", dir="/var/lib"))
    try:
        shutil.copytree(digits, root / "digits")
        yield root / "digits"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def squeue2(*args: str) -> str:
    return subprocess.run(["squeue", "-h", "-r", *args], capture_output=True, text=True, env=ENV2).stdout


@pytest.fixture
def home2(_isolated_workspace: Path, slurm_cluster2: None) -> Iterator[Path]:
    """The test's workspace; SLURM jobs it left on the two-node cluster are cancelled afterwards."""
    yield _isolated_workspace
    left = [line.split("|")[0] for line in squeue2("-o", "%i|%Z").splitlines() if str(_isolated_workspace) in line]
    if left:
        subprocess.run(["scancel", *left], check=False, env=ENV2)


def write_grid2(path: Path, name: str, digits: Path, *, epochs: int, nodes: int, nproc: int,
                budget: int = 1) -> Path:
    """A one-job grid on the two-node cluster (profile slurm-local2) with ``nodes`` x ``nproc`` ranks."""
    text = GRID.format(name=name, root=digits, epochs=epochs, budget=budget,
                       resources=f"nodes = {nodes}\nnproc_per_node = {nproc}", cluster="", subsets="",
                       methods="[methods.supervised]")
    text = text.replace("knn_k = 10", 'knn_k = 10\nprotocols = ["knn", "linear"]\nlinear_epochs = 3')  # both merged
    path.write_text(text.replace('profile = "slurm-local"', 'profile = "slurm-local2"'))
    return path


def cli2(*args: str, db: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``dlth-orch ARGS --db DB`` with workspace ``home``; the profile, not the environment, picks the cluster."""
    env = {**os.environ, "DLTH_HEARTBEAT_S": "1", "DLTH_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--db", db], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def task_logs(home: Path, slurm_id: str) -> list[str]:
    """The submitit logs of the job's tasks, in rank order."""
    return [p.read_text() for p in sorted((home / "slurm").glob(f"*/*/logs/{slurm_id}_*_log.out"))]


def placement(log: str) -> tuple[str, str, str]:
    """(rank/world, node, MASTER_ADDR) as the task logged them (workers.slurm_env)."""
    m = re.search(r"rank (\d+/\d+) \(local rank \d+\) on node (\S+): MASTER_ADDR=(\S+)", log)
    assert m, log[-2000:]
    return m.group(1), m.group(2), m.group(3)


def train_losses(job_dir: Path) -> list[float]:
    """Per-epoch train_loss of metrics.jsonl (a re-run epoch's last line wins)."""
    rows = {row["epoch"]: row for row in map(json.loads, (job_dir / "metrics.jsonl").read_text().splitlines())}
    return [rows[e]["train_loss"] for e in sorted(rows)]


def release_requeued2(slurm_id: str) -> None:
    """Make a requeued job eligible at once (it would wait ~2 minutes); see test_slurm_backend."""
    wait_for(f"{slurm_id} requeued", lambda: squeue2("-j", slurm_id, "-o", "%T").strip() == "PENDING",
             timeout=60, every=0.2)
    time.sleep(2)
    done = subprocess.run(["scontrol", "update", f"jobid={slurm_id}", "StartTime=now"], capture_output=True,
                          text=True, env=ENV2)
    # it may have started in those 2 seconds (then SLURM says it is no longer pending): that is fine too
    assert done.returncode == 0 or "no longer pending" in done.stderr.lower(), done.stderr


def test_two_node_job_equals_the_single_node_two_rank_run(tmp_path: Path, home2: Path,
                                                          shared_digits: Path) -> None:
    """The same job and seed as 2 nodes x 1 rank and as 1 node x 2 ranks, side by side on the two-node
    cluster: the same loss curve and kNN accuracy; rank 0 alone records each epoch, once."""
    epochs = 2
    runs = {}
    for label, nodes, nproc in (("two_nodes", 2, 1), ("one_node", 1, 2)):
        home = home2 / label
        grid = write_grid2(tmp_path / f"{label}.toml", "multi", shared_digits, epochs=epochs, nodes=nodes, nproc=nproc)
        db = f"sqlite:///{tmp_path / label}.sqlite"
        cli2("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db, home=home)
        runs[label] = (home, db, grid)
    jobs = {}
    for label, (home, db, grid) in runs.items():
        cli2("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db, home=home)
        (job,) = Fresh(db).jobs("multi")
        assert job.state == JobState.COMPLETED
        assert [a.state for a in Fresh(db).attempts(job.job_hash)] == [AttemptState.COMPLETED]
        jobs[label] = job

    job = jobs["two_nodes"]
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job.backend_id, "-o", "NNodes,NodeList"],
                         capture_output=True, text=True, env=ENV2, check=True).stdout.split()
    assert out == ["2|dlth2-n[1-2]"], out
    # a command that reads no profile reaches the same cluster (slurm_conf remembered in the database)
    home, db, _ = runs["two_nodes"]
    view = json.loads(cli2("slurm", "jobs", "multi", "--json", db=db, home=home).stdout)
    assert [(r["slurm_state"], r["node"]) for r in view["jobs"]] == [("COMPLETED", "dlth2-n[1-2]")]
    logs = task_logs(runs["two_nodes"][0], job.backend_id)
    assert [placement(log) for log in logs] == [("0/2", NODES[0], NODES[0]), ("1/2", NODES[1], NODES[0])], \
        "rank 0 on the first node, rank 1 on the second, both rendezvous at the first"
    assert "process group gloo: rank 0/2" in logs[0] and "process group gloo: rank 1/2" in logs[1]
    one = jobs["one_node"]
    one_logs = task_logs(runs["one_node"][0], one.backend_id)
    assert [placement(log)[0] for log in one_logs] == ["0/2", "1/2"]
    assert len({placement(log)[1] for log in one_logs}) == 1, "both ranks on one node"

    # one process group over two nodes trains exactly what two ranks on one node train
    two_curve, one_curve = train_losses(Path(job.job_dir)), train_losses(Path(one.job_dir))
    assert len(two_curve) == epochs and two_curve == pytest.approx(one_curve, rel=1e-6, abs=1e-9)
    rows = (Path(job.job_dir) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(epochs)), "each epoch recorded once"
    final_two = Fresh(runs["two_nodes"][1]).final_metrics("multi")[job.job_hash]
    final_one = Fresh(runs["one_node"][1]).final_metrics("multi")[one.job_hash]
    assert final_two["knn_top1"] == pytest.approx(final_one["knn_top1"], abs=1e-9), "kNN over both nodes' shards"
    assert "linear_top1" in final_two, "the linear probe ran inside the job, after training"
    assert final_two["linear_top1"] == pytest.approx(final_one["linear_top1"], abs=1e-6), \
        "the linear probe over both nodes' shards (gradients all-reduced across nodes)"


def worker_pids(job_file: str) -> dict[str, int]:
    """Node name -> pid of this job's worker processes (``workers.entry JOB_FILE``) on this machine."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = {}
    for line in out.splitlines():
        pid, args = line.strip().split(" ", 1)
        if "workers.entry" in args and job_file in args:
            try:
                env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
            except OSError:
                continue
            pids[env.get("SLURMD_NODENAME", "?")] = int(pid)
    return pids


def processes_of(*needles: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if any(n in line for n in needles) and "ps -ww" not in line]


def test_two_node_job_requeued_resumes_both_nodes_and_a_killed_rank_fails_both(
        tmp_path: Path, home2: Path, shared_digits: Path) -> None:
    """Preempted (SIGUSR2 to the tasks on both nodes): one requeue, both nodes resume from the same
    checkpoint. Then the worker on the second node is killed: the attempt fails on both nodes and nothing
    of the job is left running on the first."""
    grid = write_grid2(tmp_path / "grid.toml", "kill", shared_digits, epochs=20, nodes=2, nproc=1, budget=0)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli2("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db, home=home2)
    store = Fresh(db)
    (job,) = store.jobs("kill")
    sid, job_dir = job.backend_id, Path(job.job_dir)
    job_file = str(job_dir / "job.json")
    assert sid

    wait_for("a first epoch checkpoint", lambda: (job_dir / "metrics.jsonl").is_file(), timeout=240)
    subprocess.run(["scancel", "--signal=USR2", sid], check=True, env=ENV2)
    release_requeued2(sid)

    def both_resumed() -> list[list[str]] | None:
        found = [re.findall(r"resuming from \S+ \(epoch (\d+) done\)", log) for log in task_logs(home2, sid)]
        return found if len(found) == 2 and all(found) else None

    resumed = wait_for("both ranks to resume", both_resumed, timeout=240)
    assert resumed[0] == resumed[1] and len(resumed[0]) == 1, "both nodes resume from the same checkpoint"
    assert [placement(log)[:2] for log in task_logs(home2, sid)] == [("0/2", NODES[0]), ("1/2", NODES[1])]
    pids = wait_for("a worker on each node", lambda: (p := worker_pids(job_file)) and len(p) == 2 and p)
    assert sorted(pids) == list(NODES)

    os.kill(pids[NODES[1]], signal.SIGKILL)  # the second node's worker dies
    cli2("launch", str(grid), "--cluster", "slurm", "--wait", "--no-progress", db=db, home=home2)
    job = store.job(job.job_hash)
    assert job is not None and job.state == JobState.FAILED and job.failure_count == 1
    states = [a.state for a in store.attempts(job.job_hash)]
    assert states == [AttemptState.PREEMPTED, AttemptState.FAILED], states
    wait_for("no process of the job left on either node", lambda: not processes_of(job_file, str(home2 / "slurm")),
             timeout=30)
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", sid, "-o", "State"], capture_output=True, text=True,
                         env=ENV2, check=True).stdout.split()
    assert out == ["FAILED"], out


def test_the_breaker_holds_and_releases_on_the_grids_own_cluster(tmp_path: Path, home2: Path,
                                                                 shared_digits: Path) -> None:
    """A grid of four jobs on the two-node cluster (profile slurm-local2), its tasks pending until an hour
    from now. Two workers record the same first-attempt failure (through the store API, as the worker's
    reporter does: what fails is not the point here), which trips the breaker from the worker side;
    ``status`` and ``resume`` run without ``SLURM_CONF``, yet hold and release the other two tasks on the
    two-node cluster, where they are (holding ids of the default cluster would hit other grids' jobs)."""
    from workers.reporting import JobReporter

    text = GRID.format(name="brk2", root=shared_digits, epochs=1, budget=0,
                       resources='slurm = { begin = "now+1hour" }', subsets="", cluster="",
                       methods="[methods.supervised]\nlr = [0.01, 0.02, 0.05, 0.1]\n[breaker]\nthreshold = 2")
    grid = tmp_path / "grid.toml"
    grid.write_text(text.replace('profile = "slurm-local"', 'profile = "slurm-local2"'))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    cli2("launch", str(grid), "--cluster", "slurm", "--no-wait", "--no-progress", db=db, home=home2)
    store = Fresh(db)
    jobs = store.jobs("brk2")
    assert len(jobs) == 4 and all(j.state == JobState.QUEUED and j.backend_id for j in jobs)

    def reasons(js: list) -> list[str]:
        return [squeue2("-j", j.backend_id, "-o", "%r").strip() for j in js]

    assert reasons(jobs) == ["BeginTime"] * 4
    real = Store(db)
    try:
        for j in jobs[:2]:
            reporter = JobReporter(real, j.job_hash, Path(j.job_dir))
            assert reporter.claim("slurm", j.backend_id, "dlth2-n1", os.getpid(), None) is not None
            reporter.close(AttemptState.FAILED, exit_code=1, reason=f"data file unreadable: {j.job_dir}/x.beton: "
                                                                    "ValueError: negative dimensions")
        assert real.breaker_state("brk2").hold_pending
    finally:
        real.close()
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", "brk2", "--db", db], cwd=REPO,
                         env={**env, "DLTH_HOME": str(home2)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "PAUSED" in out.stdout, out.stdout + out.stderr
    rest = jobs[2:]
    assert all(r.startswith("JobHeld") for r in reasons(rest)), reasons(rest)
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "resume", "brk2", "--db", db], cwd=REPO,
                         env={**env, "DLTH_HOME": str(home2)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "2 SLURM tasks released" in out.stdout, out.stdout + out.stderr
    assert not any(r.startswith("JobHeld") for r in reasons(rest)), reasons(rest)  # released, still pending


def test_a_node_local_dataset_is_refused_on_a_multi_node_cluster(tmp_path: Path, home2: Path, digits: Path) -> None:
    """The digits lie under /tmp (node-local): fine on the one-node cluster, refused on two nodes, where a
    node other than the login node could not read them. One line, exit 2, nothing recorded."""
    grid = write_grid2(tmp_path / "grid.toml", "nodelocal", digits, epochs=1, nodes=1, nproc=1)
    db = tmp_path / "db.sqlite"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--cluster", "slurm",
                           "--no-wait", "--no-progress", "--db", f"sqlite:///{db}"], capture_output=True, text=True,
                          env={**os.environ, "DLTH_HOME": str(home2)}, timeout=300, cwd=REPO)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].endswith(
        "dataset.root: expected a path every compute node shares (it is node-local, and the cluster has 2 nodes)"), \
        lines
    assert not db.exists() or Fresh(f"sqlite:///{db}").get_grid("nodelocal") is None
    assert str(home2) not in squeue2("-o", "%Z")  # nothing submitted
