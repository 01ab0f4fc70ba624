"""An adaptive study end to end on the local backend: real training (1 epoch) on a real Fashion-MNIST shard
(30 training images per class), the looks
recorded in the database, seeds added and run inside ``launch``, ``advance`` idempotent afterwards,
``status`` and the report saying what was decided, and ``replay`` on the finished grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import JobState, Store
from orchestrator.adaptive.controller import recorded_looks
from orchestrator.adaptive.policy import CANNOT, MEETS, STOP_DECIDED, STOP_LOOKS, STOP_REJECTED, UNDECIDED
from orchestrator.grid import expand, load_grid
from subsets import DatasetMeta

from .test_e2e_local import cli

pytestmark = pytest.mark.slow

# one seed to start: an interval needs two, so look 1 cannot decide and gives every configuration its second
# seed (on both subsets); look 2 is the last (looks = 2). jobs_per_worker = 3: each round's 6 one-epoch jobs run
# in 2 worker processes (the process start and FFCV set-up, most of a tiny job's time, paid once per process)
GRID = """
name = "adapt"
seeds = [0, 1]
[dataset]
root = "{root}"
prepare = "fashion-mnist"
train_per_class = 30
val_per_class = 10
[train]
backbone = "test_resnet"
epochs = 1
batch_size = 64
image_size = 32
[resources]
cpus_per_task = 1
loader_workers = 1
jobs_per_worker = 3
[report]
min_tau = 1.0
max_regret = 0.0
confidence = 0.3
[adaptive]
seeds_min = 1
seeds_max = 2
looks = 2
[subsets.full]
strategy = "full"
[subsets.even5]
strategy = "uniform"
k = 5
[methods.supervised]
lr = [0.05, 0.051, 0.052]
"""


@pytest.fixture(scope="module")
def adaptive_grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    home = tmp_path_factory.mktemp("adaptive")
    grid = home / "grid.toml"
    grid.write_text(GRID.format(root=home / "fm"))
    db = f"sqlite:///{home / 'db.sqlite'}"
    out = cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, home=home)
    assert "adaptive: look 1" in out.stderr, out.stderr
    return grid, db, home


def test_the_looks_decide_what_runs(adaptive_grid: tuple[Path, str, Path]) -> None:
    grid_file, db, home = adaptive_grid
    store = Store(db)
    looks = recorded_looks(store, "adapt")
    first, last = looks  # looks = 2: the second is final, and its stop follows its one judgement
    (judged,) = last.judgements
    assert first.stop is None and last.stop == {MEETS: STOP_DECIDED, CANNOT: STOP_REJECTED,
                                                UNDECIDED: STOP_LOOKS}[judged.state], (last.stop, judged)
    assert last.drop == ((judged.subset,) if judged.state == CANNOT else ())
    assert looks[0].confidence == pytest.approx(1 - 0.7 / 2)
    assert all("too few seeds" in j.why for j in looks[0].judgements)
    assert len(looks[0].add) == 6 and not looks[0].drop  # 2 subsets x 3 configurations, one more seed each
    jobs = store.jobs("adapt")
    assert len(jobs) == 12 and {j.state for j in jobs} == {JobState.COMPLETED}
    # the same identities as the grid without [adaptive]
    grid = load_grid(grid_file)
    every = {ej.spec.job_hash for ej in expand(grid, DatasetMeta.load(home / "fm"))}
    assert {j.job_hash for j in jobs} == every
    # the seeds a look added ran the code the grid was launched with, as the first round did (frozen study)
    (launched,) = {launch.code_hash for launch in store.launches("adapt")}
    assert set(store.code_of([j.job_hash for j in jobs]).values()) == {launched}
    ran = {a.code_hash for codes in store.attempt_codes([j.job_hash for j in jobs]).values() for a in codes}
    assert ran == {launched}
    rows = store.looks("adapt")
    assert [r.number for r in rows] == list(range(1, len(looks) + 1)) and rows[-1].stop == looks[-1].stop


def test_advance_is_idempotent_and_status_and_report_say_why(adaptive_grid: tuple[Path, str, Path]) -> None:
    _, db, home = adaptive_grid
    store = Store(db)
    before = len(store.jobs("adapt"))
    for _ in range(2):
        out = cli("advance", "adapt", db=db, home=home)
        assert "stopped at look" in out.stdout, out.stdout
    assert len(store.jobs("adapt")) == before and len(store.looks("adapt")) == len(recorded_looks(store, "adapt"))
    status = cli("status", "adapt", db=db, home=home)
    assert "ADAPTIVE" in status.stdout and "stopped (" in status.stdout, status.stdout
    text = cli("report", "adapt", db=db, home=home).stdout
    assert "Adaptive study" in text and "look 1 (per-look confidence 0.65" in text, text


def test_replay_of_the_finished_grid(adaptive_grid: tuple[Path, str, Path]) -> None:
    _, db, home = adaptive_grid
    out = cli("replay", "adapt", "--adaptive", "--seeds-min", "1", db=db, home=home).stdout
    assert "same decision as the full grid:" in out and "jobs," in out, out
    refused = cli("replay", "adapt", db=db, home=home, check=False)
    assert refused.returncode == 2 and "--adaptive" in refused.stderr


def test_bad_adaptive_table_is_one_line_and_records_nothing(tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(root=tmp_path / "fm").replace("seeds_max = 2", "seeds_max = 4"))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, home=tmp_path, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(
        "adaptive.seeds_max: expected at most the number of seeds every method lists (2), got 4; list more seeds "
        "in seeds = [...]"), out.stderr
    assert not (tmp_path / "db.sqlite").exists() and not (tmp_path / "fm").exists()
