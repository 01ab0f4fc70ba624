"""Frozen code without training: the snapshot (content hash, dedupe, package data, read-only), git state of
a real temporary repository, ``--require-clean``, the store's code pointers on SQLite and PostgreSQL, the
0003 -> 0004 migration, ``show``'s one-line errors and the init-file digest check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from db import AttemptState, JobState, NewJob, NewLaunch, Store
from db.engine import make_engine
from db.migrate import HEAD, downgrade, upgrade
from db.testing import db_url  # noqa: F401  (fixture: a fresh database on each backend)
from orchestrator.provenance.gitinfo import git_state
from orchestrator.provenance.snapshot import package_dirs, source_files, take_snapshot
from specs.code_version import MARKER, PACKAGES, CodeMismatch, check_running_code

from .test_db_migrations import make_0001

REPO = Path(__file__).resolve().parents[1]


def copy_packages(dst: Path) -> dict[str, Path]:
    """A copy of the worker packages (what a snapshot covers)."""
    for name, src in package_dirs().items():
        shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return {name: dst / name for name in PACKAGES}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_a_snapshot_is_content_addressed_deduplicated_read_only_and_holds_package_data(tmp_path: Path) -> None:
    pkgs = copy_packages(tmp_path / "src")
    (pkgs["workers"] / "__pycache__").mkdir(exist_ok=True)
    (pkgs["workers"] / "__pycache__" / "x.pyc").write_bytes(b"not code")
    first = take_snapshot(tmp_path / "ws", pkgs)
    again = take_snapshot(tmp_path / "ws", pkgs)
    assert first.created and not again.created and again.code_hash == first.code_hash
    assert sorted(p.name for p in (tmp_path / "ws" / "code").iterdir()) == [first.code_hash]  # one copy, no tmp
    snap = first.path
    assert (snap / "subsets" / "data" / "imagenet_hierarchy.json").is_file()  # package data travels too
    assert not (snap / "workers" / "__pycache__" / "x.pyc").exists() and (snap / MARKER).is_file()
    assert list((snap / "workers" / "__pycache__").glob("entry.*.pyc"))  # compiled once, at snapshot time
    assert not os.access(snap / "workers" / "entry.py", os.W_OK) or os.geteuid() == 0
    assert (snap / "workers" / "entry.py").stat().st_mode & 0o222 == 0
    assert first.files == len(source_files(pkgs)) and first.bytes > 100_000
    (pkgs["workers"] / "entry.py").write_text((pkgs["workers"] / "entry.py").read_text() + "\n# edited\n")
    edited = take_snapshot(tmp_path / "ws", pkgs)
    assert edited.created and edited.code_hash != first.code_hash
    out = subprocess.run([sys.executable, "-c", "from specs.code_version import running_code_hash as r; print(r())"],
                         env={**os.environ, "PYTHONPATH": str(edited.path), "PYTHONSAFEPATH": "1"}, cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == edited.code_hash  # a worker knows which snapshot it imported


def test_a_worker_that_does_not_run_its_snapshot_refuses_in_one_line() -> None:
    assert check_running_code({}) is None  # the live repository, nothing expected
    with pytest.raises(CodeMismatch, match=r"^code: expected snapshot abc .* live code .*--code current\)$"):
        check_running_code({"DLTH_CODE_HASH": "abc"})


def test_git_state_names_changed_and_new_files_and_keeps_the_diff(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    copy_packages(repo)
    (repo / "README.md").write_text("not code\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    clean = git_state(repo)
    assert clean.commit == git(repo, "rev-parse", "HEAD") and clean.dirty is False and clean.diff == ""
    (repo / "README.md").write_text("docs only: not part of the snapshot\n")
    assert git_state(repo).dirty is False
    (repo / "workers" / "entry.py").write_text("print('changed')\n")
    (repo / "specs" / "new_module.py").write_text("X = 1\n")
    dirty = git_state(repo)
    assert dirty.dirty and dirty.changed == ("specs/new_module.py", "workers/entry.py")
    assert "+print('changed')" in dirty.diff and "+X = 1" in dirty.diff
    assert git_state(tmp_path).commit is None  # not a checkout: no commit, dirty unknown
    assert git_state(tmp_path).dirty is None


def test_require_clean_refuses_a_dirty_tree_in_one_line_and_writes_nothing(tmp_path: Path, meta_dir: Path) -> None:
    from .test_grid_validation import GOOD

    repo = tmp_path / "repo"
    copy_packages(repo)
    shutil.copytree(REPO / "orchestrator", repo / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "cluster_profiles", repo / "cluster_profiles")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    (repo / "workers" / "train.py").write_text("raise ImportError('edited after the commit')\n")
    grid = tmp_path / "grid.toml"
    grid.write_text(GOOD.replace('root = "', f'root = "{meta_dir}" #')
                    .replace("[train]\n", '[train]\nbackbone = "test_resnet"\nimage_size = 32\n'))
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": str(repo), "DLTH_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--require-clean"],
                          env=env, cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--require-clean" in lines[0] and "workers/train.py" in lines[0], proc.stderr
    assert not home.exists() or not any(home.iterdir())  # no database, no snapshot, no job directory


def _jobs(store: Store) -> None:
    gid = store.upsert_grid("g", "{}", "sh", "g.toml", 2)
    store.add_jobs(gid, [NewJob(h, "{}", "supervised", "ck", 0, f"/jobs/{h}", "full", h, parents=())
                         for h in ("pending", "running", "done", "tried")])


def _launch(code: str, mode: str = "launch") -> NewLaunch:
    return NewLaunch(code_hash=code, code_mode=mode, git_commit="c" * 40, git_dirty=False, git_changed=(),
                     git_diff="", python="3.11", packages={"torch": "2.14"}, host="h", command_line="dlth-orch launch")


def test_jobs_are_pointed_at_their_launch_code_and_only_unstarted_ones_move(db_url: str) -> None:  # noqa: F811
    with Store(db_url) as store:
        _jobs(store)
        assert store.point_code("g", "s1", repoint=False) == ["done", "pending", "running", "tried"]
        store.record_launch("g", _launch("s1"))
        for h in ("running", "tried", "done"):
            a = store.claim(h, backend="local", backend_id=None, host="h", pid=1)
            store.set_attempt_code(a, "s1", "node7")
            if h == "done":
                store.complete(h, a, {"acc": 0.5})
            if h == "tried":  # preempted: its checkpoint came from s1, so it stays on s1
                store.finish_attempt(a, AttemptState.PREEMPTED)
        assert store.point_code("g", "s2", repoint=False) == []  # a plain relaunch keeps every job's code
        assert store.point_code("g", "s2", repoint=True) == ["pending"]  # --code current: not started only
        assert store.code_of(["pending", "running", "done", "tried"]) == {
            "pending": "s2", "running": "s1", "done": "s1", "tried": "s1"}
        assert [(c.code_hash, c.node) for c in store.attempt_codes(["done"])["done"]] == [("s1", "node7")]
        store.record_launch("g", _launch("s2", "current"))
        assert [(la.code_hash, la.code_mode, la.packages) for la in store.launches("g")] == [
            ("s1", "launch", {"torch": "2.14"}), ("s2", "current", {"torch": "2.14"})]
        # retry --stale: the completed job of s1 is reopened, its results gone, its pointer cleared
        assert store.reopen_completed(["done", "running"]) == 1
        assert store.job("done").state == JobState.PENDING and store.metrics("done") == {}
        assert store.code_of(["done"]) == {"done": None}
        assert store.point_code("g", "s2", repoint=False) == ["done"]


def test_a_0003_database_gains_launches_and_code_columns_and_keeps_its_data(db_url: str) -> None:  # noqa: F811
    make_0001(db_url)
    engine = make_engine(db_url)
    assert upgrade(engine, "0003")[1] == "0003"
    assert upgrade(engine) == ("0003", HEAD) and HEAD == "0007"
    assert "launches" in inspect(engine).get_table_names()
    assert {"code_hash", "node"} <= {c["name"] for c in inspect(engine).get_columns("attempts")}
    with Store(db_url) as store:
        assert store.job("job1").state == JobState.COMPLETED  # old rows: no code version (the live code)
        assert store.code_of(["job1"]) == {"job1": None}
        assert [c.code_hash for c in store.attempt_codes(["job1"])["job1"]] == [None]
        store.record_launch("old", _launch("s1"))
    assert downgrade(engine, "0003") == (HEAD, "0003")
    assert "launches" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT state FROM jobs WHERE job_hash = 'job1'")).scalar() == JobState.COMPLETED
    engine.dispose()


def test_show_names_an_unknown_or_ambiguous_job_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from orchestrator.cli import main

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with Store(db) as store:
        for grid, h in (("g1", "ab01"), ("g2", "ab02")):  # one label in two grids, two different jobs
            gid = store.upsert_grid(grid, "{}", "sh", f"{grid}.toml", 2)
            store.add_jobs(gid, [NewJob(h, "{}", "supervised", "ck", 0, str(tmp_path / h), "full", "sup")])
    for what, match in (("full/sup/s0", "ambiguous, 2 jobs match"), ("ab", "ambiguous"), ("zz", "expected a job")):
        with pytest.raises(SystemExit) as exc:
            main(["show", what, "--db", db])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and len(err.splitlines()) == 1 and match in err, err
    main(["show", "full/sup/s0", "--grid", "g2", "--json", "--db", db])
    assert '"job_hash": "ab02"' in capsys.readouterr().out


def test_an_init_file_changed_after_launch_is_refused_before_loading(tmp_path: Path, meta_dir: Path) -> None:
    from orchestrator.expand import expand
    from orchestrator.grid import load_grid
    from subsets import DatasetMeta
    from workers.init_weights import InitWeightsError, verify_init_file

    from .test_grid_validation import GOOD, write

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"launch-time weights")
    text_ = GOOD + '\n[methods.warm]\nmethod = "supervised"\ninit = { file = "w.pt", strict = false }\n'
    spec = next(j.spec for j in expand(load_grid(write(tmp_path, text_)), DatasetMeta.load(meta_dir))
                if j.config_name == "warm")
    verify_init_file(spec, weights)  # unchanged: fine
    weights.write_bytes(b"other weights")
    with pytest.raises(InitWeightsError, match=r"^init: .*w\.pt changed after launch \(sha256 "):
        verify_init_file(spec, weights)
