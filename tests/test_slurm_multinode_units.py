"""Multi-node pieces that need no cluster: how nodes/ranks/GPUs become submitit/sbatch parameters, the
``slurm_conf`` profile key (validated, remembered per grid and per array, applied as ``SLURM_CONF``), and
the documented multi-node GPU profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from db import Store
from orchestrator.backends.slurm_profile import SlurmProfile, executor_parameters
from orchestrator.backends.slurm_target import array_conf, grid_conf, remember, targeting
from orchestrator.profiles import load_profile
from specs.base import SpecError
from specs.job import Resources

REPO = Path(__file__).resolve().parents[1]


def test_nodes_ranks_and_gpus_map_onto_sbatch_and_multi_rank_jobs_die_together() -> None:
    prof = SlurmProfile.from_dict(load_profile(str(REPO / "cluster_profiles" / "slurm-example.toml")))
    p = executor_parameters(Resources(nodes=2, nproc_per_node=4, gpus_per_node=4), prof)
    assert (p["nodes"], p["ntasks_per_node"], p["gpus_per_node"]) == (2, 4, 4)
    assert p["srun_args"] == ["--kill-on-bad-exit=1"], "a rank that dies ends the step on every node"
    two = executor_parameters(Resources(nodes=2, nproc_per_node=1), SlurmProfile())
    assert (two["nodes"], two["ntasks_per_node"], "gpus_per_node" in two) == (2, 1, False)
    assert two["srun_args"] == ["--kill-on-bad-exit=1"]
    assert "srun_args" not in executor_parameters(Resources(), SlurmProfile()), "one rank: nothing to end"
    setup = "\n".join(prof.setup)
    for var in ("NCCL_SOCKET_IFNAME", "NCCL_IB_HCA", "NCCL_IB_DISABLE", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
                "DLTH_DIST_TIMEOUT_S"):
        assert var in setup or var in (REPO / "cluster_profiles" / "slurm-example.toml").read_text()


def test_slurm_conf_must_name_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        SlurmProfile.from_dict({"name": "two", "slurm_conf": str(tmp_path / "nope.conf")})
    assert "cluster.slurm_conf" in str(err.value) and "nope.conf" in str(err.value)
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    assert SlurmProfile.from_dict({"slurm_conf": str(conf)}).slurm_conf == str(conf)


def test_slurm_conf_is_remembered_per_grid_and_array_and_applied_only_inside(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        remember(store, "dlth-a-1", "", ["7"])  # the default cluster: nothing recorded
        assert grid_conf(store, "dlth-a-1") == "" and array_conf(store, "7_0") == ""
        remember(store, "dlth-b-2", "/etc/slurm-dlth2/slurm.conf", ["12"])
        assert grid_conf(store, "dlth-b-2") == "/etc/slurm-dlth2/slurm.conf"
        assert array_conf(store, "12_3") == array_conf(store, "12") == "/etc/slurm-dlth2/slurm.conf"
        remember(store, "dlth-b-2", "", ["13"])  # the grid moved back to the default cluster
        assert grid_conf(store, "dlth-b-2") == "" and array_conf(store, "13_0") == ""
        assert array_conf(store, "12_0") == "/etc/slurm-dlth2/slurm.conf", "arrays keep the cluster they ran on"
    finally:
        store.close()
    with targeting("/etc/slurm-dlth2/slurm.conf"):
        assert os.environ["SLURM_CONF"] == "/etc/slurm-dlth2/slurm.conf"
    assert os.environ["SLURM_CONF"] == "/etc/slurm/slurm.conf"
    with targeting(""):
        assert os.environ["SLURM_CONF"] == "/etc/slurm/slurm.conf"
    monkeypatch.delenv("SLURM_CONF")
    with targeting("/x/slurm.conf"):
        assert os.environ["SLURM_CONF"] == "/x/slurm.conf"
    assert "SLURM_CONF" not in os.environ


def test_the_breakers_scontrol_goes_to_each_arrays_cluster_else_the_grids(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``SLURM_CONF`` as each ``scontrol`` sees it (``run_slurm`` replaced by a recorder: no cluster here; the
    real two-node cluster: test_slurm_multinode.py): arrays recorded on a cluster go there, the others to
    the grid's cluster, never to the default one of the shell that runs ``status``."""
    from orchestrator import breaker
    from orchestrator.backends import slurm_cmd
    from orchestrator.backends.slurm_profile import job_name
    from orchestrator.backends.slurm_target import by_cluster

    monkeypatch.delenv("SLURM_CONF", raising=False)
    seen: list[tuple[str | None, list[str]]] = []
    monkeypatch.setattr(slurm_cmd, "run_slurm",
                        lambda args, **_: seen.append((os.environ.get("SLURM_CONF"), args)))
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        remember(store, job_name(store, "g"), "/etc/slurm-dlth2/slurm.conf", ["12"])
        remember(store, "dlth-other", "/x/slurm.conf", ["9"])
        assert by_cluster(store, ["12_0", "9_1", "5_0"], "/d.conf") == {
            "/etc/slurm-dlth2/slurm.conf": ["12_0"], "/x/slurm.conf": ["9_1"], "/d.conf": ["5_0"]}
        breaker._scontrol(store, "g", "hold", ["12_0", "12_1", "9_1", "5_0"])
    finally:
        store.close()
    assert sorted(seen) == [("/etc/slurm-dlth2/slurm.conf", ["scontrol", "hold", "12_0,12_1,5_0"]),
                            ("/x/slurm.conf", ["scontrol", "hold", "9_1"])]
    assert "SLURM_CONF" not in os.environ
