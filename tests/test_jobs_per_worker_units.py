"""``jobs_per_worker``, the fast part: the key stays out of the identity, SLURM packs only ready jobs into
batched tasks (children wait on the task that holds their parent), a batched worker puts process-wide
torch settings back between jobs and freezes what survives them, and FFCV imports without compiling."""

from __future__ import annotations

import dataclasses
import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import torch

from orchestrator.backends.base import PlanJob
from orchestrator.backends.slurm_graph import plan_graph
from orchestrator.backends.slurm_profile import SlurmProfile
from specs.base import SpecError
from specs.job import EvalConfig, JobSpec, Resources, TrainConfig
from workers.batch import ProcessState, settle


def spec(seed: int, per_worker: int = 1, depends_on: tuple[str, ...] = ()) -> JobSpec:
    return JobSpec(grid="g", dataset_root="/d", dataset_fingerprint="f", subset_name="full",
                   subset={"strategy": "full"}, manifest_hash="m", config_name="sup", method="supervised",
                   hparams={}, train=TrainConfig(), eval=EvalConfig(), seed=seed,
                   resources=Resources(jobs_per_worker=per_worker), depends_on=depends_on)


def test_jobs_per_worker_is_out_of_the_identity_and_checked() -> None:
    assert spec(0, per_worker=8).job_hash == spec(0).job_hash
    try:
        JobSpec.from_json(spec(0).to_json().replace('"jobs_per_worker": 1', '"jobs_per_worker": 0'))
    except SpecError as exc:
        assert "jobs_per_worker" in str(exc)
    else:
        raise AssertionError("jobs_per_worker = 0 was accepted")


def test_slurm_packs_ready_jobs_into_tasks_and_children_wait_on_their_parents_task() -> None:
    parents = [PlanJob(f"p{i}", f"p{i}", spec(i, per_worker=3)) for i in range(7)]
    children = [PlanJob(f"c{i}", f"c{i}", spec(100 + i, per_worker=3, depends_on=(f"p{i}",)), (f"p{i}",))
                for i in (0, 4)]
    codes = {f"p{i}": "A" if i != 5 else "B" for i in range(7)}  # one job of another code snapshot
    first, second = plan_graph(parents + children, SlurmProfile(), chunk=100, codes=codes)
    assert [[j.job_hash for j in t] for t in first.tasks] == [["p0", "p1", "p2"], ["p3", "p4", "p6"], ["p5"]]
    assert [len(t) for t in second.tasks] == [1, 1]  # children wait: never batched
    assert second.corr is None and second.dependency(["42"]) == "afterok:42_0:42_1"  # p0 in task 0, p4 in 1
    lone = plan_graph(parents[:2], SlurmProfile(), chunk=100)[0]
    lone_specs = [dataclasses.replace(p, spec=spec(i)) for i, p in enumerate(parents[:2])]
    assert len(plan_graph(lone_specs, SlurmProfile(), chunk=100)[0].tasks) == 2 and len(lone.tasks) == 1


def test_process_state_is_put_back_between_jobs() -> None:
    baseline = ProcessState.capture()
    threads = torch.get_num_threads()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)  # what a `deterministic = true` job leaves
        torch.backends.cudnn.benchmark = not baseline.cudnn_benchmark
        torch.set_num_threads(1)
        baseline.restore()
        assert ProcessState.capture() == baseline
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)


def test_settle_collects_the_last_jobs_garbage_and_freezes_the_rest() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    gc.unfreeze()
    try:
        kept, dropped = Node(), weakref.ref(Node())
        settle()
        assert dropped() is None and gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # frozen: no collection walks it again
    finally:
        gc.unfreeze()


def test_ffcv_imports_without_compiling_numbas_typed_dict() -> None:
    """In a fresh process: FFCV's image-mode table is a plain dict of the same ints, numba's typed Dict was
    never loaded (so never compiled), and ``numba.typed.Dict`` is numba's own again afterwards."""
    probe = (
        "import sys, numba.typed; from workers.data._ffcv import import_ffcv; import_ffcv()\n"
        "from ffcv.fields.rgb_image import IMAGE_MODES\n"
        "assert type(IMAGE_MODES) is dict and IMAGE_MODES == {'jpg': 0, 'raw': 1}, IMAGE_MODES\n"
        "assert 'numba.typed.typeddict' not in sys.modules and 'Dict' not in vars(numba.typed)\n"
        "from numba.typed import Dict; d = Dict(); d['a'] = 1; assert type(d).__module__ == 'numba.typed.typeddict'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
