"""The job graph without training: ``init`` in grid files, identities of children, recording the edges,
and the lifecycle of WAITING / PARENT_FAILED jobs in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from db import Store
from db.testing import db_url  # noqa: F401  (fixture: a fresh database on each backend)
from orchestrator.grid import expand, load_grid
from orchestrator.launch import record_grid
from specs.base import SpecError
from specs.lifecycle import JobState
from subsets import DatasetMeta

from .test_expand import PINNED, _spec
from .test_grid_validation import GOOD, write

GRAPH = GOOD + """
[methods.finetune]
method = "supervised"
init = { from = "simclr", checkpoint = "final" }
lr = [0.01, 0.05]
"""


SMALL_GRAPH = GRAPH.replace("lr = 0.1\n[subsets", 'lr = 0.1\nbackbone = "test_resnet"\nimage_size = 32\n[subsets')


def test_a_child_table_is_expanded_once_per_parent_configuration(tmp_path: Path, meta_dir: Path) -> None:
    jobs = expand(load_grid(write(tmp_path, GRAPH)), DatasetMeta.load(meta_dir))
    by_hash = {j.spec.job_hash: j for j in jobs}
    children = [j for j in jobs if j.config_name.startswith("finetune")]
    # 2 lrs x 2 simclr configurations x 2 subsets x 2 seeds
    assert len(children) == 16 and len(jobs) == 32
    assert sorted({j.config_name for j in children}) == [
        "finetune[lr=0.01]@simclr[lr=0.3,temperature=0.1]", "finetune[lr=0.01]@simclr[lr=0.4,temperature=0.2]",
        "finetune[lr=0.05]@simclr[lr=0.3,temperature=0.1]", "finetune[lr=0.05]@simclr[lr=0.4,temperature=0.2]"]
    for c in children:
        (parent_hash,) = c.spec.depends_on
        parent = by_hash[parent_hash]
        assert c.spec.init == {"job": parent_hash, "config": parent.spec.config_key, "checkpoint": "final",
                               "exclude": [], "strict": True}
        # the same seed on the same subset, of the configuration the label names
        assert (parent.spec.seed, parent.subset_name) == (c.spec.seed, c.subset_name)
        assert c.config_name.endswith("@" + parent.config_name)
    # one configuration key per (child config, parent config), shared across subsets and seeds
    assert len({j.spec.config_key for j in children}) == 4
    assert len({(j.config_name, j.spec.config_key) for j in children}) == 4


def test_a_childs_identity_follows_its_parents_and_pinned_hashes_stay(tmp_path: Path, meta_dir: Path) -> None:
    meta = DatasetMeta.load(meta_dir)
    before = {j.config_name + j.subset_name + str(j.spec.seed): j.spec.job_hash
              for j in expand(load_grid(write(tmp_path, GRAPH)), meta)}
    # a change of the parent's hyperparameter changes every child, and nothing else
    after = {j.config_name + j.subset_name + str(j.spec.seed): j.spec.job_hash
             for j in expand(load_grid(write(tmp_path, GRAPH.replace("lr = [0.3, 0.4]", "lr = [0.3, 0.45]"))), meta)}
    sup = [k for k in before if k.startswith("supervised")]
    assert sup and all(before[k] == after[k] for k in sup)
    changed_children = [k for k in after if k.startswith("finetune") and "lr=0.45" in k]
    assert len(changed_children) == 8 and not set(after[k] for k in changed_children) & set(before.values())
    assert _spec(depends_on=("a" * 16,)).job_hash != PINNED["default"]  # the pins themselves: test_expand
    assert _spec(depends_on=("a" * 16,)).job_hash != _spec(depends_on=("b" * 16,)).job_hash


def test_a_file_init_records_its_digest_and_a_changed_file_makes_new_jobs(tmp_path: Path, meta_dir: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"one")
    text = GOOD + ('\n[methods.warm]\nmethod = "supervised"\n'
                   'init = { file = "w.pt", exclude = ["fc.*"], strict = false }\n')
    meta = DatasetMeta.load(meta_dir)
    jobs = [j for j in expand(load_grid(write(tmp_path, text)), meta) if j.config_name == "warm"]
    assert len(jobs) == 4 and all(j.spec.depends_on == () for j in jobs)
    init = jobs[0].spec.init
    assert init["file"] == str(weights) and init["exclude"] == ["fc.*"] and init["strict"] is False
    assert init["sha256"] == "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
    weights.write_bytes(b"two")
    again = [j for j in expand(load_grid(write(tmp_path, text)), meta) if j.config_name == "warm"]
    assert not {j.spec.job_hash for j in jobs} & {j.spec.job_hash for j in again}


@pytest.mark.parametrize(("init", "key", "expected"), [
    ('{ from = "nope" }', "methods.finetune.init.from", "the name of another [methods.NAME] table"),
    ('{ from = "finetune" }', "methods.finetune.init.from", "the name of another [methods.NAME] table"),
    ('{ from = "simclr", checkpoint = "best" }', "methods.finetune.init.checkpoint", "one of final"),
    ('{ file = "missing.pt" }', "methods.finetune.init.file", "an existing checkpoint file"),
    ('{ from = "simclr", file = "x.pt" }', "methods.finetune.init", "exactly one of"),
    ('{ from = "simclr", exclude = "fc.*" }', "methods.finetune.init.exclude", "a list of key patterns"),
    ('{ from = "simclr", strict = 1 }', "methods.finetune.init.strict", "true or false"),
    ('{ from = "simclr", frm = 1 }', "methods.finetune.init.frm", "one of from, file"),
])
def test_bad_init_names_the_key(tmp_path: Path, meta_dir: Path, init: str, key: str, expected: str) -> None:
    text = GRAPH.replace('{ from = "simclr", checkpoint = "final" }', init)
    with pytest.raises(SpecError) as err:
        load_grid(write(tmp_path, text))
    assert f": {key}: expected {expected}" in str(err.value)


def test_cycles_and_seeds_the_parent_lacks_are_refused(tmp_path: Path, meta_dir: Path) -> None:
    cyc = GRAPH.replace("[methods.simclr]\n", '[methods.simclr]\ninit = { from = "finetune" }\n')
    with pytest.raises(SpecError, match=r"init.from: expected no cycle of init.from \((simclr -> finetune -> "
                                        r"simclr|finetune -> simclr -> finetune)\)"):
        load_grid(write(tmp_path, cyc))
    seeds = GRAPH.replace("lr = [0.01, 0.05]", "lr = [0.01, 0.05]\nseeds = [0, 7]")
    with pytest.raises(SpecError, match="methods.finetune.seeds: expected seeds that 'simclr' runs too"):
        load_grid(write(tmp_path, seeds))


def test_record_keeps_the_edges_children_wait_and_a_dead_parent_fails_them(
        tmp_path: Path, meta_dir: Path, db_url: str) -> None:  # noqa: F811
    from orchestrator.grid.graph import advance

    store = Store(db_url)
    rec = record_grid(store, load_grid(write(tmp_path, GRAPH)), DatasetMeta.load(meta_dir))
    assert rec.new == 32
    deps = store.grid_deps("g")
    assert len(deps) == 16 and all(len(p) == 1 for p in deps.values())
    counts = store.state_counts("g")
    assert counts == {JobState.PENDING: 16, JobState.WAITING: 16}
    child, (parent,) = next(iter(deps.items()))
    assert [j.job_hash for j in store.parents(child)] == [parent]
    assert child in {j.job_hash for j in store.children(parent)}
    assert store.claim(child, backend="local", backend_id=None, host="h", pid=1) is None  # parent not done
    assert store.ready_jobs("g") == []
    # the parent completes: its children (one per finetune lr) become runnable
    a = store.claim(parent, backend="local", backend_id=None, host="h", pid=1)
    store.complete(parent, a, {"acc": 1.0})
    assert child in {j.job_hash for j in store.ready_jobs("g")}
    moved = advance(store, "g", failure_budget=0)
    assert len(moved.released) == 2 and store.job(child).state == JobState.PENDING
    # another parent fails past its budget: its children are PARENT_FAILED, and come back on retry
    other = next(p for c, (p,) in deps.items() if p != parent)
    a = store.claim(other, backend="local", backend_id=None, host="h", pid=1)
    store.finish_attempt(a, "FAILED", reason="boom")
    moved = advance(store, "g", failure_budget=0)
    kids = sorted(c for c, (p,) in deps.items() if p == other)
    assert sorted(moved.parent_failed) == kids and {store.job(k).state for k in kids} == {JobState.PARENT_FAILED}
    store.reset_jobs([other], [JobState.FAILED])
    assert sorted(advance(store, "g", failure_budget=0).rewaiting) == kids
    assert {store.job(k).state for k in kids} == {JobState.WAITING}
    store.close()


def _cli(*args: str, home: Path) -> Any:
    """The CLI in this process (each subprocess would import torch again)."""
    from click.testing import CliRunner

    from orchestrator.cli import cli

    return CliRunner().invoke(cli, list(args), env={"DLTH_HOME": str(home)}, catch_exceptions=False)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, meta_dir: Path) -> None:
    import json

    home = tmp_path / "home"
    path = write(tmp_path, SMALL_GRAPH.replace('root = "ds"', f'root = "{meta_dir}"'))
    db = tmp_path / "db.sqlite"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = _cli("launch", str(path), "--dry-run", "--json", "--db", f"sqlite:///{db}", home=home)
    assert proc.exit_code == 0, proc.output
    plan = json.loads(proc.output)
    assert plan["backend"] == "local" and plan["jobs"] == 32
    assert [(g["name"], len(g["jobs"]), g["depends_on"]) for g in plan["groups"]] == [
        ("level0", 16, []), ("level1", 16, ["level0"])]
    slurm = _cli("launch", str(path), "--dry-run", "--json", "--cluster", "slurm", home=home)
    assert slurm.exit_code == 0, slurm.output
    arrays = json.loads(slurm.output)["groups"]
    # parents: one array; children: one array per (lr, simclr configuration) aligned task by task
    # parents (supervised and simclr share SLURM parameters): one array; children: afterok on its tasks
    assert [(g["dependency"], len(g["jobs"]), g["depends_on"]) for g in arrays] == [
        ("", 16, []), ("afterok", 16, ["array0"])]
    # without the supervised table, each child array matches the parent array task by task: aftercorr
    only_simclr = write(tmp_path, SMALL_GRAPH.replace('root = "ds"', f'root = "{meta_dir}"')
                        .replace("[methods.supervised]\nlr = [0.1, 0.2]\n", ""))
    slurm = _cli("launch", str(only_simclr), "--dry-run", "--json", "--cluster", "slurm", home=home)
    arrays = json.loads(slurm.output)["groups"]
    assert [(g["dependency"], len(g["jobs"]), g["depends_on"]) for g in arrays] == [
        ("", 8, []), ("aftercorr", 8, ["array0"]), ("aftercorr", 8, ["array0"])]
    for child_array in arrays[1:]:  # task i of a child array is the child of task i of the parent array
        for parent, child in zip(arrays[0]["jobs"], child_array["jobs"], strict=True):
            (ps, pc, pseed), (cs, cc, cseed) = parent.split("/"), child.split("/")
            assert (cs, cc.split("@")[1], cseed) == (ps, pc, pseed)
    table = _cli("launch", str(path), "--dry-run", home=home)
    assert table.exit_code == 0 and "nothing written" in table.output and "level1" in table.output
    assert not db.exists() and not home.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_cancel_of_a_parent_cancels_its_dependents(tmp_path: Path, meta_dir: Path) -> None:
    import json

    home = tmp_path / "home"
    path = write(tmp_path, SMALL_GRAPH.replace('root = "ds"', f'root = "{meta_dir}"'))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(db)
    record_grid(store, load_grid(path), DatasetMeta.load(meta_dir))
    deps = store.grid_deps("g")
    parent = next(iter(deps.values()))[0]
    kids = sorted(c for c, ps in deps.items() if parent in ps)
    proc = _cli("cancel", "g", "--job", parent, "--yes", "--db", db, home=home)
    assert proc.exit_code == 0, proc.output
    # one simclr job, and its fine-tuned children (one per finetune lr)
    assert proc.output.strip() == "3 jobs cancelled, 2 of them dependents of the selected jobs"
    assert {store.job(h).state for h in [parent, *kids]} == {JobState.CANCELLED}
    counts = store.state_counts("g")
    assert counts == {JobState.CANCELLED: 3, JobState.PENDING: 15, JobState.WAITING: 14}
    status = _cli("status", "g", "--json", "--db", db, home=home)
    assert status.exit_code == 0, status.output
    waiting = json.loads(status.output)[0]["waiting"]
    assert len(waiting) == 14
    assert all(len(w["waits_for"]) == 1 and "/simclr[" in w["waits_for"][0] for w in waiting)
    store.close()


def test_the_lifecycle_table_refuses_what_is_not_a_transition(tmp_path: Path) -> None:
    from db import NewJob
    from specs.lifecycle import TRANSITIONS, TransitionError, may_retry, state_from_parents

    assert set(TRANSITIONS) == set(JobState) and TRANSITIONS[JobState.COMPLETED] == frozenset()
    assert (may_retry(2, 2), may_retry(3, 2)) == (True, False)
    assert state_from_parents([("COMPLETED", 0), ("FAILED", 1)], 1) is None  # the failed one will retry
    assert state_from_parents([("COMPLETED", 0), ("FAILED", 2)], 1) == JobState.PARENT_FAILED
    assert state_from_parents([("COMPLETED", 0), ("CANCELLED", 0)], 5) == JobState.PARENT_FAILED
    assert state_from_parents([("COMPLETED", 0)], 0) == JobState.PENDING
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    gid = store.upsert_grid("g", "{}", "h", "", 0)
    store.add_jobs(gid, [NewJob("p", "{}", "supervised", "k", 0, str(tmp_path), "full", "c")])
    with pytest.raises(TransitionError, match="COMPLETED -> PENDING is not a transition"):
        store.reset_jobs(["p"], [JobState.COMPLETED])
    with pytest.raises(TransitionError, match="PENDING -> COMPLETED"):
        store.set_state(["p"], JobState.COMPLETED, [JobState.PENDING])
    assert store.job("p").state == JobState.PENDING
    store.close()
