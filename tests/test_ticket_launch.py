"""A ticket grid launched for real (local backend, 1 epoch on the digits): ``launch`` trains the ticket's jobs,
the audit chooses inside it (best and worst of the ticket's ranking) and trains those on ``full``; the report
has the ticket's section; ``advance`` afterwards changes nothing. The earlier grid's results are ingested (see
``tests/test_ticket.py``), so its recommendation is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import JobState, Store
from orchestrator.adaptive.audit import recorded_audit
from orchestrator.grid import load_grid
from orchestrator.launch import record_grid
from subsets import DatasetMeta

from .test_e2e_local import cli
from .test_ticket import REUSE, STUDY, TICKET, finish, write

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> tuple[str, Path, str]:
    """(database URL, DLTH_HOME, the launch's stderr) of grid "next", the ticket of "study" with audit = 2."""
    home = tmp_path_factory.mktemp("ticket_launch")
    db = f"sqlite:///{home / 'db.sqlite'}"
    store = Store(db)
    study = load_grid(write(home, "study", STUDY.format(name="study", root=digits, lrs=[0.01, 0.02, 0.03])))
    record_grid(store, study, DatasetMeta.load(digits))
    finish(store, "study", lambda s, lr: 0.5 + (lr if s != "rand5" else -lr), lambda s: 1.0)
    store.close()
    text = REUSE.format(name="next", root=digits, lucky=TICKET.format(source="study", audit=2), more="",
                        lrs="[0.05, 0.2, 0.8]")
    grid = write(home, "next", text.replace("loader_workers = 1", "loader_workers = 1\njobs_per_worker = 3"))
    out = cli("launch", str(grid), "--cluster", "local", "--no-progress", db=db, home=home)
    return db, home, out.stderr


def test_launch_trains_the_ticket_then_its_audit(launched: tuple[str, Path, str]) -> None:
    db, _, stderr = launched
    assert "adaptive: audit: 2 of 3 configurations of lucky on full" in stderr, stderr
    store = Store(db)
    jobs = store.jobs("next")
    assert {j.state for j in jobs} == {JobState.COMPLETED}, [(j.config_name, j.state, j.last_error) for j in jobs]
    choice = recorded_audit(store, "next")["lucky"]
    assert choice.ranked == 3 and len(choice.configs) == 2 and choice.ranks[0] == 1
    on_full = sorted(j.config_key for j in jobs if j.subset_name == "full")
    assert on_full == sorted(choice.configs)
    assert sum(j.subset_name == "lucky" for j in jobs) == 3


def test_report_and_advance(launched: tuple[str, Path, str]) -> None:
    db, home, _ = launched
    text = cli("report", "next", db=db, home=home).stdout
    assert "Dataset lottery ticket" in text and "lucky is the ticket of grid study" in text, text
    assert "the audit AGREES with the ticket" in text or "the audit DISAGREES with the ticket" in text, text
    assert "saving (an estimate): running all 3 jobs on the reference would take" in text, text
    before = len(Store(db).jobs("next"))
    out = cli("advance", "next", db=db, home=home)
    assert "grid next: audit: 2 of 3 configurations" in out.stdout, out.stdout
    assert len(Store(db).jobs("next")) == before
