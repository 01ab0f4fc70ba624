"""SLURM backend pieces that need no cluster: sacct/squeue parsing (on output copied from the local
SLURM 22.05 cluster), verdicts, profile validation and merging, array planning, back-off."""

from __future__ import annotations

from datetime import datetime

import pytest

from db import AttemptState
from orchestrator.backends.slurm import Backoff
from orchestrator.backends.slurm_profile import SlurmProfile, executor_parameters, group_key
from orchestrator.backends.slurm_reconcile import verdict
from orchestrator.backends.slurm_sacct import expand_ids, parse_duration, parse_sacct, parse_squeue
from orchestrator.backends.slurm_submit import absolute_db_url
from specs.base import SpecError
from specs.job import Resources

# `sacct -X -D -P -n -o JobID,State,ExitCode,Submit,Start,End,Elapsed,Timelimit,NodeList,WorkDir` (trimmed)
SACCT = """\
6_0|COMPLETED|0:0|2026-11-22T00:03:01|2026-11-22T00:03:06|2026-11-22T00:03:06|00:00:00|UNLIMITED|vm|/w/a
6_[2-3%2]|PENDING|0:0|2026-11-22T00:03:01|Unknown|Unknown|00:00:00|UNLIMITED|None assigned|/w/a
2|FAILED|3:0|2026-11-22T00:03:01|2026-11-22T00:03:01|2026-11-22T00:03:01|00:00:00|UNLIMITED|vm|/w/b
3|FAILED|0:9|2026-11-22T00:03:04|2026-11-22T00:03:04|2026-11-22T00:03:05|00:00:01|UNLIMITED|vm|/w/b
5|CANCELLED by 0|0:0|2026-11-22T00:03:05|2026-11-22T00:03:05|2026-11-22T00:03:06|00:00:01|UNLIMITED|vm|/w/b
16|REQUEUED|0:0|2026-11-22T00:05:01|2026-11-22T00:05:01|2026-11-22T00:05:06|00:00:05|00:05:00|vm|/w/c
16|COMPLETED|0:0|2026-11-22T00:05:06|2026-11-22T00:05:15|2026-11-22T00:05:35|00:00:20|00:05:00|vm|/w/c
4|TIMEOUT|0:0|2026-11-22T00:03:04|2026-11-22T00:03:04|2026-11-22T00:04:25|00:01:21|00:01:00|vm|/w/b
"""


def test_sacct_rows_parse_with_array_ranges_expanded_and_requeues_kept() -> None:
    runs = parse_sacct(SACCT)
    ids = [r.slurm_id for r in runs]
    assert ids == ["6_0", "6_2", "6_3", "2", "3", "5", "16", "16", "4"]
    pending = runs[1]
    assert pending.state == "PENDING" and pending.alive and pending.start is None and pending.task_index == 2
    assert runs[3].exit_code == 3 and runs[3].signal == 0
    assert runs[4].signal == 9
    assert runs[5].state == "CANCELLED" and not runs[5].alive
    assert [r.state for r in runs if r.slurm_id == "16"] == ["REQUEUED", "COMPLETED"]
    assert runs[-1].timelimit_s == 60 and runs[-1].elapsed_s == 81
    assert runs[0].start == datetime(2026, 11, 22, 0, 3, 6) and runs[0].workdir == "/w/a"


def test_squeue_rows_parse() -> None:
    text = "7_1|RUNNING|2026-11-22T00:03:01|2026-11-22T00:03:06|0:05|30:00|vm|/w/a\n" \
           "7_[2-4]|PENDING|2026-11-22T00:03:01|N/A|0:00|30:00||/w/a\n"
    runs = parse_squeue(text)
    assert [r.slurm_id for r in runs] == ["7_1", "7_2", "7_3", "7_4"]
    assert runs[0].alive and runs[0].elapsed_s == 5 and runs[0].timelimit_s == 1800
    assert runs[1].start is None


@pytest.mark.parametrize(("text", "secs"), [("00:01:21", 81), ("1-02:03:04", 93784), ("30:00", 1800),
                                            ("45", 2700), ("UNLIMITED", None), ("Partition_Limit", None)])
def test_durations(text: str, secs: int | None) -> None:
    assert parse_duration(text) == secs


def test_expand_ids() -> None:
    assert expand_ids("12_[0-2,5%3]") == ["12_0", "12_1", "12_2", "12_5"]
    assert expand_ids("12_7") == ["12_7"] and expand_ids("12") == ["12"]


def test_verdicts_tell_timeout_preemption_oom_and_failure_apart() -> None:
    runs = {r.slurm_id + r.state: r for r in parse_sacct(SACCT)}
    assert verdict(runs["4TIMEOUT"], "", 30) == AttemptState.TIMEOUT
    assert verdict(runs["16REQUEUED"], "", 30) == AttemptState.PREEMPTED  # 5 s of a 5 min limit: preempted
    assert verdict(runs["5CANCELLED"], "", 30) == AttemptState.CANCELLED
    assert verdict(runs["2FAILED"], "Traceback ...", 30) == AttemptState.FAILED
    oom_tail = "slurmstepd-vm: error: Exceeded job memory limit"
    assert verdict(runs["3FAILED"], oom_tail, 30) == AttemptState.OUT_OF_MEMORY
    assert verdict(runs["3FAILED"], "killed for another reason", 30) == AttemptState.FAILED
    srun_killed = parse_sacct("8_0|FAILED|9:0|2026-11-22T00:00:00|2026-11-22T00:00:00|2026-11-22T00:00:03|"
                              "00:00:03|00:30:00|vm|/w\n")[0]  # the batch script exits 9 when srun's task is killed
    assert verdict(srun_killed, oom_tail, 30) == AttemptState.OUT_OF_MEMORY
    near_limit = parse_sacct("9|REQUEUED|0:0|2026-11-22T00:00:00|2026-11-22T00:00:00|2026-11-22T00:04:31|"
                             "00:04:31|00:05:00|vm|/w\n")[0]
    assert verdict(near_limit, "", 30) == AttemptState.TIMEOUT  # requeued on the limit's SIGUSR2


def test_profile_rejects_unknown_keys_and_bad_types_with_one_line() -> None:
    with pytest.raises(SpecError, match=r"cluster\.partiton: expected a SLURM profile key"):
        SlurmProfile.from_dict({"partiton": "gpu"})
    with pytest.raises(SpecError, match=r"cluster\.array_throttle: expected an integer >= 1"):
        SlurmProfile.from_dict({"array_throttle": 0})
    with pytest.raises(SpecError, match=r"cluster\.backend"):
        SlurmProfile.from_dict({"backend": "local"})


def test_resources_override_the_profile_and_the_slurm_table_overrides_both() -> None:
    profile = SlurmProfile.from_dict({"partition": "gpu", "account": "lab", "cpus_per_task": 8, "mem_gb": 32.0,
                                      "time_min": 600, "gpus_per_node": 1, "sbatch": {"mail-type": "FAIL"}})
    base = executor_parameters(Resources(), profile)
    assert base["cpus_per_task"] == 8 and base["mem"] == "32768M" and base["time"] == 600
    assert base["gpus_per_node"] == 1 and base["partition"] == "gpu" and base["account"] == "lab"
    assert base["additional_parameters"] == {"mail-type": "FAIL"}
    big = executor_parameters(Resources(nodes=2, nproc_per_node=4, gpus_per_node=4, time_min=30,
                                        slurm={"partition": "long", "qos": "high", "account": "",
                                               "reservation": "r1"}), profile)
    assert (big["nodes"], big["ntasks_per_node"], big["gpus_per_node"], big["time"]) == (2, 4, 4, 30)
    assert big["partition"] == "long" and big["qos"] == "high" and "account" not in big
    assert big["additional_parameters"] == {"mail-type": "FAIL", "reservation": "r1"}
    assert group_key(base) != group_key(big)


def test_backoff_grows_while_nothing_changes_and_resets_on_change() -> None:
    b = Backoff(1.0, 5.0)
    assert [b.next(False) for _ in range(5)] == [1.5, 2.25, 3.375, 5.0, 5.0]
    assert b.next(True) == 1.0


def test_relative_sqlite_urls_become_absolute(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    assert absolute_db_url("sqlite:///x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    assert absolute_db_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_db_url("postgresql+psycopg://u:p@h/db") == "postgresql+psycopg://u:p@h/db"


def test_arrays_are_cut_at_the_array_size_and_split_by_resources(tmp_path, meta_dir) -> None:  # type: ignore[no-untyped-def]
    from db import Store
    from orchestrator.backends.slurm_submit import plan_arrays
    from orchestrator.grid import load_grid
    from orchestrator.launch import record_grid
    from subsets import DatasetMeta

    grid = tmp_path / "grid.toml"
    grid.write_text(f'name = "g"\nseeds = [0, 1, 2, 3, 4, 5, 6]\n[dataset]\nroot = "{meta_dir}"\n'
                    '[subsets.full]\nstrategy = "full"\n[methods.supervised]\n'
                    '[methods.simclr]\nseeds = [0, 1]\n[methods.simclr.resources]\nnproc_per_node = 2\n')
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    record_grid(store, load_grid(grid), DatasetMeta.load(meta_dir))
    plan = list(plan_arrays(store.jobs("g"), SlurmProfile(), chunk=3))
    sizes = sorted((p["ntasks_per_node"], len(members)) for p, members in plan)
    assert sizes == [(1, 1), (1, 3), (1, 3), (2, 2)]  # 7 supervised jobs in arrays of <= 3; simclr apart


def test_an_attempt_belongs_to_the_run_that_started_nearest_before_it() -> None:
    """Runs of a requeued job 14 s apart (a 1-minute job signalled early, as seen on the test cluster):
    within the allowed clock skew of both, each attempt still finds its own run."""
    from db import AttemptRow
    from orchestrator.backends.slurm_reconcile import _run_of
    from orchestrator.backends.slurm_sacct import SlurmRun

    def run(start: str, end: str | None, state: str) -> SlurmRun:
        return SlurmRun("158_0", state, 0, None, None, datetime.fromisoformat(start),
                        datetime.fromisoformat(end) if end else None, 11, 60, "vm", "/w")

    def attempt(started: str) -> AttemptRow:
        return AttemptRow(1, "h", 1, AttemptState.PREEMPTED, "slurm", "158_0", "vm", 1,
                          datetime.fromisoformat(started), None, None, None, None)

    first = run("2026-11-22T03:17:05", "2026-11-22T03:17:16", "REQUEUED")
    second = run("2026-11-22T03:17:19", None, "RUNNING")
    assert _run_of(attempt("2026-11-22T03:17:07"), [first, second]) is first
    assert _run_of(attempt("2026-11-22T03:17:21"), [first, second]) is second
    assert _run_of(attempt("2026-11-22T03:17:02"), [first, second]) is first  # the DB's clock 3 s behind
    assert _run_of(attempt("2026-11-22T04:00:00"), [first]) is None  # no run could have held it
    # an earlier run of a requeued job is over although its state (REQUEUED) says the job lives on
    assert first.alive and first.ended and second.alive and not second.ended


def test_squeue_overrules_a_stale_accounting_record_of_a_live_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """sacct says 8_3 was cancelled and lacks 8_4; squeue (the controller) lists both as held: both are
    alive, and the finished 8_0 keeps sacct's record. The SLURM commands' answers are canned text."""
    from orchestrator.backends import slurm_sacct

    sacct = ("8_0|FAILED|1:0|2026-11-22T00:03:01|2026-11-22T00:03:02|2026-11-22T00:03:09|00:00:07|UNLIMITED|vm|/w\n"
             "8_3|CANCELLED|0:0|2026-11-22T00:03:01|Unknown|2026-11-22T00:03:09|00:00:00|UNLIMITED|None|/w\n")
    squeue = ("8_0|FAILED|2026-11-22T00:03:01|2026-11-22T00:03:02|0:07|UNLIMITED|vm|/w\n"
              "8_3|PENDING|2026-11-22T00:03:01|N/A|0:00|UNLIMITED||/w\n"
              "8_4|PENDING|2026-11-22T00:03:01|N/A|0:00|UNLIMITED||/w\n")
    asked: list[str] = []

    class Done:
        def __init__(self, out: str) -> None:
            self.stdout = out

    def fake(cmd: list[str], **_: object) -> Done:
        asked.append(cmd[0])
        return Done(sacct if cmd[0] == "sacct" else squeue)

    monkeypatch.setattr(slurm_sacct, "run_slurm", fake)
    view = slurm_sacct.query("g", datetime(2026, 11, 22), ["8_0", "8_3", "8_4"])
    assert asked == ["sacct", "squeue"] and view.commands == 2
    assert view.latest("8_3").alive and view.latest("8_4").alive
    assert view.latest("8_0").state == "FAILED" and view.latest("8_0").exit_code == 1
    asked.clear()
    assert not slurm_sacct.query("g", datetime(2026, 11, 22), ["8_0"]).latest("8_0").alive
    assert asked == ["sacct", "squeue"]  # a task sacct calls over is checked with the controller once


class _Canned:
    """SLURM's answers as canned text (``run_slurm`` of :mod:`slurm_sacct` replaced): the tools asked, in
    order; ``sacct=None`` makes sacct fail like an unreachable slurmdbd."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, sacct: str | None, squeue: str) -> None:
        from orchestrator.backends import slurm_sacct
        from orchestrator.backends.slurm_cmd import SlurmError

        self.asked: list[str] = []

        class Done:
            def __init__(self, out: str) -> None:
                self.stdout = out

        def fake(cmd: list[str], **_: object) -> Done:
            self.asked.append(cmd[0])
            if cmd[0] == "sacct" and sacct is None:
                raise SlurmError("sacct: slurmdbd unreachable")
            return Done(sacct if cmd[0] == "sacct" else squeue)  # type: ignore[arg-type]

        monkeypatch.setattr(slurm_sacct, "run_slurm", fake)


@pytest.fixture
def four_jobs(tmp_path, meta_dir):  # type: ignore[no-untyped-def]
    """A grid of 4 recorded jobs, submitted once from this workspace: two WAITING on tasks 9_0 and 9_1
    (pending on a dependency), one QUEUED on 8_0, one RUNNING on 8_1."""
    from db import JobState, Store
    from orchestrator.backends.slurm_profile import job_name
    from orchestrator.backends.slurm_submit import grid_dir
    from orchestrator.grid import load_grid
    from orchestrator.launch import record_grid
    from subsets import DatasetMeta

    grid = tmp_path / "grid.toml"
    grid.write_text(f'name = "g"\nseeds = [0, 1, 2, 3]\n[dataset]\nroot = "{meta_dir}"\n'
                    '[subsets.full]\nstrategy = "full"\n[methods.supervised]\n')
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    record_grid(store, load_grid(grid), DatasetMeta.load(meta_dir))
    (grid_dir(job_name(store, "g")) / "20261122T000000-a").mkdir(parents=True)
    w0, w1, q, r = (j.job_hash for j in sorted(store.jobs("g"), key=lambda j: j.seed))
    store.set_state([w0, w1], JobState.WAITING, [JobState.PENDING], check=False)
    store.mark_queued([w0, w1, q, r], "slurm", ["9_0", "9_1", "8_0", "8_1"])
    store.set_state([r], JobState.RUNNING, [JobState.QUEUED])
    return store, (w0, w1, q, r)


SQ_RUNNING = "8_1|RUNNING|2026-11-22T00:03:01|2026-11-22T00:03:02|0:07|UNLIMITED|vm|/w\n"
SQ_WAITING = "9_[0-1]|PENDING|2026-11-22T00:03:01|N/A|0:00|UNLIMITED||/w\n"


def test_while_tasks_wait_on_a_dependency_one_squeue_is_the_whole_refresh(monkeypatch, four_jobs) -> None:  # type: ignore[no-untyped-def]
    """Accounting never lists tasks pending on a dependency; the controller does: when squeue lists every
    task alive, that one command is the refresh and nothing moves."""
    from orchestrator.backends.slurm_profile import job_name
    from orchestrator.backends.slurm_reconcile import reconcile_grid

    store, hashes = four_jobs
    before = [(j.state, j.backend_id) for j in store.jobs("g")]
    canned = _Canned(monkeypatch, sacct="", squeue=SQ_RUNNING + SQ_WAITING +
                     "8_0|PENDING|2026-11-22T00:03:01|N/A|0:00|UNLIMITED||/w\n")
    res = reconcile_grid(store, "g", job_name(store, "g"))
    assert canned.asked == ["squeue"] and res.commands == 1
    assert not res.changed() and [(j.state, j.backend_id) for j in store.jobs("g")] == before


def test_a_task_slurm_no_longer_knows_is_noticed_in_one_refresh(monkeypatch, four_jobs) -> None:  # type: ignore[no-untyped-def]
    """9_1 was cancelled while it waited (squeue lacks it; sacct never listed it) and 8_0 was purged (in
    neither): in that very refresh the WAITING job loses its task (the next submission gives it one) and
    the QUEUED job goes back to PENDING; the others keep theirs."""
    from db import JobState
    from orchestrator.backends.slurm_profile import job_name
    from orchestrator.backends.slurm_reconcile import reconcile_grid

    store, (w0, w1, q, r) = four_jobs
    canned = _Canned(monkeypatch, sacct="", squeue=SQ_RUNNING + SQ_WAITING.replace("9_[0-1]", "9_0"))
    res = reconcile_grid(store, "g", job_name(store, "g"))
    assert canned.asked == ["squeue", "sacct"] and res.commands == 2 and res.vanished == 2
    state = {j.job_hash: (j.state, j.backend_id) for j in store.jobs("g")}
    assert state == {w0: (JobState.WAITING, "9_0"), w1: (JobState.WAITING, None), q: (JobState.PENDING, None),
                     r: (JobState.RUNNING, "8_1")}
    # a task given meanwhile is never forgotten by a refresh that looked at the old one
    store.mark_queued([w1], "slurm", ["9_7"])
    assert store.forget_tasks({w1: "9_1"}) == [] and store.job(w1).backend_id == "9_7"


def test_a_queued_task_missing_while_sacct_is_down_gets_the_grace_period(monkeypatch, four_jobs) -> None:  # type: ignore[no-untyped-def]
    """Without accounting's answer a missing task may just have ended long ago: the QUEUED job keeps it
    (for ``UNKNOWN_GRACE``), while a waiting task squeue lacks is gone whatever sacct says."""
    from db import JobState
    from orchestrator.backends.slurm_profile import job_name
    from orchestrator.backends.slurm_reconcile import reconcile_grid

    store, (w0, w1, q, r) = four_jobs
    canned = _Canned(monkeypatch, sacct=None, squeue=SQ_RUNNING)
    res = reconcile_grid(store, "g", job_name(store, "g"))
    assert canned.asked == ["squeue", "sacct"] and res.unknown == 1
    state = {j.job_hash: (j.state, j.backend_id) for j in store.jobs("g")}
    assert state[q] == (JobState.QUEUED, "8_0")
    assert state[w0] == state[w1] == (JobState.WAITING, None)


def test_a_vanished_child_of_a_failed_parent_is_marked_parent_failed_with_the_reason(
        monkeypatch: pytest.MonkeyPatch, tmp_path, meta_dir) -> None:  # type: ignore[no-untyped-def]
    """The child's task is gone and its parent failed past the budget: the same refresh forgets the task and
    marks the child PARENT_FAILED, which ``status`` explains (canned SLURM answers, as above)."""
    from db import AttemptState, JobState, Store
    from orchestrator.backends.slurm import SlurmBackend
    from orchestrator.backends.slurm_profile import job_name
    from orchestrator.backends.slurm_submit import grid_dir
    from orchestrator.grid import load_grid
    from orchestrator.launch import record_grid
    from orchestrator.status import grid_status
    from subsets import DatasetMeta

    grid = tmp_path / "grid.toml"
    grid.write_text(f'name = "g"\nseeds = [0]\nfailure_budget = 0\n[dataset]\nroot = "{meta_dir}"\n'
                    '[subsets.full]\nstrategy = "full"\n[methods.supervised]\n'
                    '[methods.ft]\nmethod = "supervised"\ninit = { from = "supervised" }\n')
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    record_grid(store, load_grid(grid), DatasetMeta.load(meta_dir))
    (grid_dir(job_name(store, "g")) / "20261122T000000-a").mkdir(parents=True)
    parent, child = sorted(store.jobs("g"), key=lambda j: j.config_name != "supervised")
    assert child.state == JobState.WAITING
    store.mark_queued([parent.job_hash, child.job_hash], "slurm", ["8_0", "9_0"])
    attempt = store.claim(parent.job_hash, backend="slurm", backend_id="8_0", host="vm", pid=1)
    store.finish_attempt(attempt, AttemptState.FAILED, exit_code=1, reason="KeyError: 'lr'")
    _Canned(monkeypatch, sacct="", squeue="")
    res = SlurmBackend().refresh(store, "g")
    assert res.vanished == 1
    now = store.job(child.job_hash)
    assert (now.state, now.backend_id) == (JobState.PARENT_FAILED, None)
    (row,) = grid_status(store, "g").parent_failed
    assert row["reason"] == "full/supervised/s0 is FAILED after 1 failures", row
    store.close()
