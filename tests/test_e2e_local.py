"""End to end on the local backend: real training on real digits images, report from the trained models,
idempotent relaunch, and resume after a worker (or the whole launcher) is killed mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from db import AttemptState, JobState, Store

from .test_job_contract import assert_only_contract_files

pytestmark = pytest.mark.slow

GRID = """
name = "{name}"
seeds = [0]
failure_budget = 2
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
[subsets.full]
strategy = "full"
[subsets.even5]
strategy = "uniform"
k = 5
{methods}
"""
METHODS = """
[methods.supervised]
lr = [0.01, 0.2]
[methods.simclr]
temperature = 0.2
"""


def cli(*args: str, db: str, home: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLTH_HOME": str(home), "DLTH_HEARTBEAT_S": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--db", db], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_quickstart_like_grid_trains_reports_and_relaunches_idempotently(tmp_path: Path, digits: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(name="e2e", root=digits, epochs=2, methods=METHODS))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, home=tmp_path)

    store = Store(db)
    jobs = store.jobs("e2e")
    assert len(jobs) == 6  # 2 subsets x (2 supervised + 1 simclr) x 1 seed
    assert {j.state for j in jobs} == {JobState.COMPLETED}
    finals = store.final_metrics("e2e")
    for j in jobs:
        m = finals[j.job_hash]
        assert 0.0 <= m["knn_top1"] <= 1.0 and m["epochs"] == 2.0
        assert m["num_classes"] == (10 if j.subset_name == "full" else 5)
        assert [a.state for a in store.attempts(j.job_hash)] == [AttemptState.COMPLETED]
        on_disk = json.loads((Path(j.job_dir) / "final_metrics.json").read_text())["metrics"]
        assert on_disk == pytest.approx(m)
        assert len(store.metrics(j.job_hash)) == 3  # two epochs + final
        assert_only_contract_files(Path(j.job_dir))  # launch and worker write only what the contract names
    # real learning: the supervised model at lr 0.2 on the full digits beats chance (0.1) by far
    best = max(finals[j.job_hash]["val_top1"] for j in jobs if j.subset_name == "full" and j.method == "supervised")
    assert best > 0.5

    # the report's numbers are the trained models' numbers
    rep = json.loads(cli("report", "e2e", "--json", db=db, home=tmp_path).stdout)
    flat = json.dumps(rep)
    for j in jobs:
        assert j.config_name in flat
    knn = {(j.subset_name, j.config_name): finals[j.job_hash]["knn_top1"] for j in jobs}
    found = _config_means(rep)
    assert found, rep
    for key, mean in found.items():
        assert mean == pytest.approx(knn[key])
    assert (tmp_path / "reports" / "e2e" / "report.html").is_file()

    # per-class accuracy of the best supervised model on full feeds a per_class_accuracy subset
    sup = max((j for j in jobs if j.subset_name == "full" and j.method == "supervised"),
              key=lambda j: finals[j.job_hash]["val_top1"])
    acc_file = tmp_path / "acc.csv"
    cli("subsets", "class-accuracy", sup.job_hash, "--out", str(acc_file), db=db, home=tmp_path)
    rows = [ln.split(",") for ln in acc_file.read_text().splitlines() if ln and not ln.startswith("wnid")]
    acc = {w: float(a) for w, a in rows}
    assert sorted(acc) == [f"digit{i}" for i in range(10)]
    assert acc == pytest.approx(_per_class_by_hand(Path(sup.job_dir)), abs=1e-6)  # class by class (float32)
    assert len(set(acc.values())) > 1  # classes differ, so a permutation of them would show
    hard = tmp_path / "hard.toml"
    hard.write_text(grid.read_text().replace('strategy = "uniform"\nk = 5',
                                             f'strategy = "per_class_accuracy"\nk = 3\nmode = "hardest"\n'
                                             f'accuracy_file = "{acc_file}"'))
    shown = json.loads(subprocess.run([sys.executable, "-m", "orchestrator.cli", "subsets", "show", str(hard),
                                       "--json"], capture_output=True, text=True, check=True,
                                      env={**os.environ, "DLTH_HOME": str(tmp_path)}).stdout)
    hardest = sorted(acc, key=lambda w: (acc[w], w))[:3]
    assert sorted(c["wnid"] for c in shown["subsets"]["even5"]["classes"]) == sorted(hardest)

    # relaunch: nothing new, nothing rerun
    out = cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, home=tmp_path)
    assert "0 new" in out.stderr and "0 jobs to run" in out.stderr
    assert all(len(store.attempts(j.job_hash)) == 1 for j in jobs)


def _per_class_by_hand(job_dir: Path) -> dict[str, float]:
    """Per-class accuracy of a finished supervised job on the full digits, computed here: its checkpoint's
    predictions on the validation images, counted per original label (digit ``i`` is label ``i``)."""
    import numpy as np
    import torch

    from specs.contract import JobPaths
    from specs.job import JobSpec
    from workers.data.loader import build_loader
    from workers.manifest import load_manifest
    from workers.train import build_method

    paths = JobPaths(job_dir)
    spec = JobSpec.from_json(paths.job_file.read_text())
    meta, manifest = load_manifest(spec, job_dir)
    assert [c.wnid for c in manifest.classes] == [f"digit{i}" for i in range(10)]  # full: labels unchanged
    method = build_method(spec, 10)
    method.load_state_dict(torch.load(paths.checkpoint, map_location="cpu", weights_only=False)["model"])
    method.eval()
    hits, seen = np.zeros(10), np.zeros(10)
    with torch.no_grad():
        for views, y in build_loader(meta, manifest, "val", recipe="eval", batch_size=100, image_size=32, seed=0,
                                     train=False, num_workers=1):
            pred = method.head(method.backbone(views[0])).argmax(1).numpy()
            np.add.at(seen, y.numpy(), 1)
            np.add.at(hits, y.numpy(), pred == y.numpy())
    assert seen.sum() == len(meta.labels["val"])  # every validation image, once
    return {f"digit{i}": hits[i] / seen[i] for i in range(10)}


def _config_means(rep: dict) -> dict[tuple[str, str], float]:
    """(subset, config) -> mean metric from the report's JSON (whatever nesting it uses)."""
    out: dict[tuple[str, str], float] = {}

    def walk(node: object, subset: str | None) -> None:
        if isinstance(node, dict):
            sub = node.get("subset", subset) if isinstance(node.get("subset", subset), str) else subset
            if "config" in node and "mean" in node and sub is not None and node["mean"] is not None:
                out[(sub, node["config"])] = float(node["mean"])
            for v in node.values():
                walk(v, sub)
        elif isinstance(node, list):
            for v in node:
                walk(v, subset)

    walk(rep, None)
    return out


def _wait_for(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _epochs_logged(job_dir: Path) -> list[int]:
    path = job_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


ONE_JOB = """
[methods.supervised]
lr = 0.1
"""


def _one_job_grid(tmp_path: Path, digits: Path, name: str, epochs: int) -> tuple[Path, str]:
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(name=name, root=digits, epochs=epochs, methods=ONE_JOB).replace(
        '[subsets.even5]\nstrategy = "uniform"\nk = 5\n', ""))
    return grid, f"sqlite:///{tmp_path / 'db.sqlite'}"


def test_worker_killed_mid_run_is_retried_and_resumes_from_its_checkpoint(tmp_path: Path, digits: Path) -> None:
    grid, db = _one_job_grid(tmp_path, digits, "killw", epochs=5)
    env = {**os.environ, "DLTH_HOME": str(tmp_path), "DLTH_HEARTBEAT_S": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--no-progress",
                                 "--db", db], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = Store(db)
    job = _wait_for(lambda: (store.jobs("killw") or [None])[0], 120, "the job to be recorded")
    job_dir = Path(job.job_dir)
    _wait_for(lambda: len(_epochs_logged(job_dir)) >= 2, 240, "two epochs")
    attempt = store.open_attempts("killw")[0]
    os.kill(attempt.pid, signal.SIGKILL)  # the worker dies without a word
    out, _ = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, out
    final = store.job(job.job_hash)
    assert final is not None and final.state == JobState.COMPLETED
    states = [a.state for a in store.attempts(job.job_hash)]
    assert states[0] in (AttemptState.FAILED, AttemptState.LOST) and states[-1] == AttemptState.COMPLETED
    epochs = _epochs_logged(job_dir)
    assert sorted(set(epochs)) == list(range(5))
    assert epochs.count(0) == 1 and epochs.count(1) == 1  # resumed, not restarted from scratch


def test_launcher_killed_mid_run_resumes_on_next_launch(tmp_path: Path, digits: Path) -> None:
    grid, db = _one_job_grid(tmp_path, digits, "killl", epochs=5)
    env = {**os.environ, "DLTH_HOME": str(tmp_path), "DLTH_HEARTBEAT_S": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--no-progress",
                                 "--db", db], env=env, start_new_session=True)
    store = Store(db)
    job = _wait_for(lambda: (store.jobs("killl") or [None])[0], 120, "the job to be recorded")
    job_dir = Path(job.job_dir)
    _wait_for(lambda: len(_epochs_logged(job_dir)) >= 2, 240, "two epochs")
    worker_pid = store.open_attempts("killl")[0].pid
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher dies (closed laptop) ...
    os.kill(worker_pid, signal.SIGKILL)  # ... and so does its worker (its own session)
    launcher.wait()
    assert store.job(job.job_hash).state == JobState.RUNNING  # nobody told the DB

    (status,) = json.loads(cli("status", "killl", "--json", db=db, home=tmp_path).stdout)
    assert status["counts"]["FAILED"] == 1  # the lost attempt was noticed
    cli("launch", str(grid), "--no-progress", db=db, home=tmp_path)
    final = store.job(job.job_hash)
    assert final is not None and final.state == JobState.COMPLETED
    attempts = store.attempts(job.job_hash)
    assert [a.state for a in attempts] == [AttemptState.LOST, AttemptState.COMPLETED]
    epochs = _epochs_logged(job_dir)
    assert sorted(set(epochs)) == list(range(5)) and epochs.count(0) == 1
    assert "resuming from" in Path(attempts[1].log_path).read_text()


def test_detach_returns_at_once_and_the_background_launcher_finishes(tmp_path: Path, digits: Path) -> None:
    grid, db = _one_job_grid(tmp_path, digits, "detached", epochs=1)
    cli("launch", str(grid), "--detach", db=db, home=tmp_path)
    returned = datetime.now(UTC).replace(tzinfo=None)  # as the store records times: naive UTC
    store = Store(db)
    job = store.jobs("detached")[0]
    _wait_for(lambda: store.job(job.job_hash).state == JobState.COMPLETED, 300, "the detached job")
    (attempt,) = store.attempts(job.job_hash)
    assert attempt.ended_at > returned  # launch returned before the job ended: it did not wait for it
    (status,) = json.loads(cli("status", "--json", db=db, home=tmp_path).stdout)
    assert status["grid"] == "detached" and status["counts"]["COMPLETED"] == 1 and status["total"] == 1
    assert (tmp_path / "logs" / "launch-detached.log").is_file()


def test_two_rank_ddp_job_under_torchrun(tmp_path: Path, digits: Path) -> None:
    """A job with nproc_per_node = 2 runs as one torchrun process group (gloo on the CPU): both ranks train
    and report the same all-reduced loss every epoch. That SimCLR's loss and gradients over 2 ranks are one
    process's over the global batch is tests/test_methods_dist.py's. (Several nodes cannot exist here;
    SLURM's test covers 2 tasks.)"""
    grid = tmp_path / "grid.toml"
    text = GRID.format(name="ddp", root=digits, epochs=2, methods="[methods.simclr]\ntemperature = 0.2\n")
    text = text.replace('[subsets.even5]\nstrategy = "uniform"\nk = 5\n', "").replace(
        "cpus_per_task = 1", "cpus_per_task = 1\nnproc_per_node = 2")
    grid.write_text(text)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cli("launch", str(grid), "--no-progress", db=db, home=tmp_path)
    store = Store(db)
    (job,) = store.jobs("ddp")
    assert job.state == JobState.COMPLETED
    log = Path(store.attempts(job.job_hash)[0].log_path).read_text()
    assert "rank 0/2" in log and "rank 1/2" in log
    losses = re.findall(r"epoch (\d)/2 loss (\S+)", log)
    assert len(losses) == 4, log  # 2 epochs x 2 ranks
    for epoch in ("1", "2"):
        values = [value for e, value in losses if e == epoch]
        assert len(values) == 2 and values[0] == values[1], losses  # the ranks agree on the all-reduced loss
    assert 0.0 <= store.final_metrics("ddp")[job.job_hash]["knn_top1"] <= 1.0


def test_jobs_on_a_gpu_machine_get_gpus_of_their_own(tmp_path: Path, digits: Path) -> None:
    """No GPU exists here: the grid's [cluster] table hands the local backend two GPU ids, as on a GPU box.
    The two jobs run at the same time, each seeing only its own id; the workers (finding no CUDA device
    behind the id) train on the CPU. A job wanting more ranks than there are GPUs is refused at launch."""
    grid, db = _one_job_grid(tmp_path, digits, "gpus", epochs=1)
    text = grid.read_text().replace("seeds = [0]", "seeds = [0, 1]") + '\n[cluster]\ngpus = ["7", "9"]\n'
    grid.write_text(text)
    cli("launch", str(grid), "--no-progress", db=db, home=tmp_path)
    store = Store(db)
    jobs = store.jobs("gpus")
    assert len(jobs) == 2 and {j.state for j in jobs} == {JobState.COMPLETED}
    attempts = [store.attempts(j.job_hash)[0] for j in jobs]
    seen = sorted(re.search(r"CUDA_VISIBLE_DEVICES=(\S+)\)", Path(a.log_path).read_text()).group(1)
                  for a in attempts)
    assert seen == ["7", "9"]
    first, second = sorted(attempts, key=lambda a: a.started_at)
    assert second.started_at < first.ended_at  # side by side, not one after the other

    grid.write_text(text.replace("cpus_per_task = 1", "cpus_per_task = 1\nnproc_per_node = 3"))
    out = cli("launch", str(grid), "--no-progress", db=db, home=tmp_path, check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: {grid}: resources.nproc_per_node: expected at most 2 ranks per node: "
                                  "this machine offers GPUs 7,9 and each rank needs its own")
    assert len(store.jobs("gpus")) == 2  # nothing recorded
