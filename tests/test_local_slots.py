"""Packing local jobs: CPU cores, or GPUs of their own. No GPU exists here, so GPU ids are given to the
pool as a profile would; what the pool hands out is exactly what the workers would see."""

from __future__ import annotations

import pytest

from orchestrator.backends.local_slots import Allocation, SlotPool
from specs.base import SpecError
from specs.job import Resources


def test_gpu_jobs_get_disjoint_gpus_and_wait_for_free_ones() -> None:
    pool = SlotPool.for_profile({"gpus": [0, 1, 2, "3"]})
    assert pool.uses_gpus and pool.total == 4
    two = Resources(nproc_per_node=2, gpus_per_node=2)
    a = pool.take(two)
    b = pool.take(Resources(nproc_per_node=1))  # one rank: one GPU, whatever gpus_per_node says
    assert a == Allocation(2, ("0", "1")) and b == Allocation(1, ("2",))
    assert a.env() == {"CUDA_VISIBLE_DEVICES": "0,1"} and b.env() == {"CUDA_VISIBLE_DEVICES": "2"}
    assert pool.take(two) is None  # only GPU 3 is free
    pool.give_back(a)
    c = pool.take(two)
    assert c is not None and c.gpus == ("0", "1")
    pool.give_back(b)
    pool.give_back(c)
    assert pool.take(Resources(nproc_per_node=4)) == Allocation(4, ("0", "1", "2", "3"))


def test_a_job_with_more_ranks_than_gpus_can_never_run() -> None:
    pool = SlotPool.for_profile({"gpus": ["7", "9"]})
    pool.check_fits(Resources(nproc_per_node=2), "resources.nproc_per_node")
    with pytest.raises(SpecError) as info:
        pool.check_fits(Resources(nproc_per_node=3), "resources.nproc_per_node")
    assert str(info.value) == ("resources.nproc_per_node: expected at most 2 ranks per node: this machine offers "
                               "GPUs 7,9 and each rank needs its own")


def test_cpu_jobs_pack_into_cores_and_an_oversized_job_runs_alone() -> None:
    pool = SlotPool.for_profile({"max_slots": 4, "gpus": []})
    assert not pool.uses_gpus and pool.total == 4
    a = pool.take(Resources(nproc_per_node=1, cpus_per_task=3))
    assert a == Allocation(3) and a.env() == {}
    assert pool.take(Resources(cpus_per_task=2)) is None
    assert pool.take(Resources(cpus_per_task=1)) == Allocation(1)
    pool.give_back(a)
    big = Resources(nproc_per_node=2, cpus_per_task=8)  # 16 cores wanted, 4 here
    assert pool.take(big) is None  # one core is still busy
    pool.give_back(Allocation(1))
    assert pool.take(big) == Allocation(4)


@pytest.mark.parametrize(("profile", "key"), [
    ({"gpus": "0,1"}, "cluster.gpus"), ({"gpus": [0, 0]}, "cluster.gpus"), ({"gpus": [True]}, "cluster.gpus"),
    ({"max_slots": -1}, "cluster.max_slots"), ({"max_slots": "4"}, "cluster.max_slots"),
])
def test_bad_local_profiles_name_the_key(profile: dict, key: str) -> None:
    with pytest.raises(SpecError) as info:
        SlotPool.for_profile(profile)
    assert info.value.key == key


def test_by_default_the_pool_is_every_visible_gpu_or_else_every_core() -> None:
    import os

    import torch

    pool = SlotPool.for_profile({})
    if torch.cuda.is_available():
        assert pool.uses_gpus and len(pool.gpus) == torch.cuda.device_count()
    else:  # CI and the development machines
        assert not pool.uses_gpus and pool.total == len(os.sched_getaffinity(0))
