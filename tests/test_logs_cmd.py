"""``dlth-orch logs``: a real job killed mid-run and resumed (tests/opsview_grid.py) read back across its two
attempts, followed live with ``-f`` through the retry; unknown and ambiguous jobs. The SLURM requeue case is
in test_logs_slurm.py."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from db import Store
from orchestrator.grid import load_grid
from orchestrator.launch import record_grid
from subsets import DatasetMeta

from .opsview_grid import GRID_NAME, TrainedGrid, cli, trained

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("opsview_grid")]  # one training per worker


@pytest.fixture(scope="module")
def trained_grid(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> TrainedGrid:
    return trained(tmp_path_factory, digits)

HEADER = re.compile(r"^==> attempt (\d+) on (\S+) at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \((\w+)", re.MULTILINE)


def test_the_log_shows_both_attempts_each_marked_with_its_own_part(trained_grid: TrainedGrid) -> None:
    t = trained_grid
    out = cli("logs", t.killed[:12], db=t.db, home=t.home)
    assert out.returncode == 0, out.stderr
    heads = HEADER.findall(out.stdout)
    assert [h[0] for h in heads] == ["1", "2"] and all(h[3] == "local" for h in heads), out.stdout[:2000]
    first, second = out.stdout.split("==> attempt 2", 1)
    assert "epoch 2/4" in first and "epoch 4/4" not in first  # killed after two epochs
    assert "resuming from" in second and "epoch 4/4" in second and "epoch 1/4" not in second
    only2 = cli("logs", t.killed[:12], "--attempt", "2", db=t.db, home=t.home).stdout
    assert only2.startswith("==> attempt 2") and "==> attempt 1" not in only2 and "epoch 4/4" in only2
    with Store(t.db) as store:  # a label names the job as well as its hash
        label = next(f"{j.subset_name}/{j.config_name}/s{j.seed}" for j in store.jobs(GRID_NAME)
                     if j.job_hash == t.killed)
    assert cli("logs", label, db=t.db, home=t.home).stdout == out.stdout


def test_follow_went_on_through_the_retry_and_ended_with_the_job(trained_grid: TrainedGrid) -> None:
    t = trained_grid
    assert t.follow_rc == 0, t.follow_output[-2000:]
    heads = HEADER.findall(t.follow_output)
    assert [h[0] for h in heads] == ["1", "2"], t.follow_output[:3000]
    after = t.follow_output.split("==> attempt 2", 1)[1]
    assert "resuming from" in after and "epoch 4/4" in after and "done:" in after


def test_unknown_and_ambiguous_jobs_and_attempts_are_one_line_and_exit_2(
        trained_grid: TrainedGrid, tmp_path: Path, digits: Path) -> None:
    t = trained_grid
    for args in (["zzzz"], [""], [t.killed[:12], "--attempt", "9"]):
        out = cli("logs", *args, db=t.db, home=t.home)
        assert out.returncode == 2 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out
    # a second grid (recorded, not run) whose jobs have the same labels: a label alone is ambiguous
    db = tmp_path / "copy.sqlite"
    shutil.copyfile(t.db.removeprefix("sqlite:///"), db)
    other = tmp_path / "other.toml"
    other.write_text(t.grid_file.read_text().replace('name = "ops"', 'name = "ops_b"').replace("epochs = 4",
                                                                                             "epochs = 3"))
    with Store(f"sqlite:///{db}") as store:
        record_grid(store, load_grid(other), DatasetMeta.load(digits))
    out = cli("logs", "full/supervised[lr=0.05]/s0", db=f"sqlite:///{db}", home=t.home)
    assert out.returncode == 2 and "ambiguous, 2 jobs match" in out.stderr and out.stdout == "", out
    assert len(out.stderr.strip().splitlines()) == 1
    out = cli("logs", "full/supervised[lr=0.05]/s0", "--grid", GRID_NAME, db=f"sqlite:///{db}", home=t.home)
    assert out.returncode == 0 and "==> attempt 1" in out.stdout


def test_rank_selects_slurms_task_files_and_filters_a_shared_local_log(tmp_path: Path) -> None:
    from orchestrator.job_logs import RankFilter, rank_files

    out = tmp_path / "logs" / "77_3_0_log.out"
    assert rank_files(str(out), "slurm", 2) == (tmp_path / "logs" / "77_3_2_log.out",
                                                tmp_path / "logs" / "77_3_2_log.err")
    assert rank_files(str(tmp_path / "a.log"), "local", 1) == (tmp_path / "a.log",)
    text = ("t [rank 0] INFO a\nt [rank 1] INFO b\nTraceback (most recent call last):\n  boom\n"
            "t [rank 0] INFO c\n")
    assert RankFilter(1)(text) == "t [rank 1] INFO b\nTraceback (most recent call last):\n  boom\n"
    assert RankFilter(0)(text) == "t [rank 0] INFO a\nt [rank 0] INFO c\n"
    assert RankFilter(None)(text) == text
