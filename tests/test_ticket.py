"""Reusing a dataset lottery ticket (``strategy = "ticket"``, ``audit = N``) on the real digits dataset.

The earlier grid ("study") is recorded through the real launch pipeline (job files, manifests, database rows)
and its results are ingested directly (final metrics and attempt spans through the store, as the report's
tests do), so its report deterministically recommends ``even5``: its ranking of four configurations is the
reference's, ``rand5``'s is reversed. No training here; ``tests/test_ticket_launch.py`` trains a ticket grid.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from db import JobState, Store
from db.models import Grid
from orchestrator.adaptive.audit import recorded_audit, spread
from orchestrator.adaptive.controller import step
from orchestrator.grid import expand, load_grid
from orchestrator.grid.ticket import take_tickets
from orchestrator.launch import record_grid
from orchestrator.report.ticket_section import TITLE, ticket_section
from orchestrator.report_files import produce
from orchestrator.results import ReportRequest
from specs.base import SpecError
from subsets import DatasetMeta, SubsetError, resolve
from tests.conftest import write_meta_dir
from tests.report_store import T0, set_span

from .test_e2e_local import cli

COMMON = """
seeds = [0]
[dataset]
root = "{root}"
[train]
backbone = "test_resnet"
epochs = 1
batch_size = 64
image_size = 32
[resources]
cpus_per_task = 1
loader_workers = 1
"""
STUDY = """name = "{name}"
""" + COMMON + """
[report]
confidence = 0
min_tau = 0.8
max_regret = 0.01
[subsets.full]
strategy = "full"
[subsets.even5]
strategy = "uniform"
k = 5
[subsets.rand5]
strategy = "uniform"
k = 5
mode = "random"
seed = 3
[methods.supervised]
lr = {lrs}
"""
REUSE = """name = "{name}"
""" + COMMON + """
[report]
confidence = 0
[subsets.lucky]
{lucky}
{more}
[methods.supervised]
lr = {lrs}
"""
TICKET = 'strategy = "ticket"\nfrom = "{source}"\naudit = {audit}'
FULL = '[subsets.full]\nstrategy = "full"'
LRS = "[0.1, 0.2, 0.3, 0.4, 0.5]"


def lr_of(label: str) -> float:
    """The learning rate in a label such as ``supervised[lr=0.02]``."""
    return float(label.split("lr=")[1].rstrip("]"))


def finish(store: Store, grid: str, value: Callable[[str, float], float], hours: Callable[[str], float]) -> None:
    """Complete the grid's pending jobs with ``value(subset, lr)`` as knn_top1, each attempt ``hours(subset)``
    long (as a worker's ingested final metrics would)."""
    for j in store.jobs(grid, [JobState.PENDING]):
        att = store.claim(j.job_hash, backend="local", backend_id=None, host="h", pid=1)
        assert att is not None
        store.complete(j.job_hash, att, {"knn_top1": value(j.subset_name, lr_of(j.config_name))})
        set_span(store, att, T0, T0 + timedelta(hours=hours(j.subset_name)))


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> tuple[Path, str, Path]:
    """(folder, database URL, dataset root): "study" finished (recommends even5), "split" finished (recommends
    nothing), "running" recorded and not run."""
    folder = tmp_path_factory.mktemp("ticket")
    db = f"sqlite:///{folder / 'db.sqlite'}"
    store = Store(db)
    meta = DatasetMeta.load(digits)
    grids = {"study": [0.01, 0.02, 0.03, 0.04], "split": [0.05, 0.06, 0.07, 0.08], "running": [0.6, 0.7, 0.8, 0.9]}
    for name, lrs in grids.items():  # distinct configurations: jobs of one grid are never another's
        record_grid(store, load_grid(write(folder, name, STUDY.format(name=name, root=digits, lrs=lrs))), meta)
    # study: even5 ranks like full, rand5 reversed; split: both reversed
    finish(store, "study", lambda s, lr: 0.5 + (lr if s != "rand5" else -lr), lambda s: 1.0)
    finish(store, "split", lambda s, lr: 0.5 + (lr if s == "full" else -lr), lambda s: 1.0)
    store.close()
    return folder, db, digits


def reuse(folder: Path, name: str, root: Path, *, lucky: str, more: str = FULL, lrs: str = LRS) -> Path:
    return write(folder, name, REUSE.format(name=name, root=root, lucky=lucky, more=more, lrs=lrs))


def test_a_ticket_is_the_recommended_subset_with_the_same_job_hashes(study: tuple[Path, str, Path]) -> None:
    folder, db, root = study
    meta = DatasetMeta.load(root)
    ticket = TICKET.format(source="study", audit=0)
    hashes = []
    for name in ("reuse", "reuse2"):
        grid = take_tickets(load_grid(reuse(folder, name, root, lucky=ticket)), db)
        src = grid.tickets["lucky"]
        assert (src.grid, src.subset, src.provisional) == ("study", "even5", False)
        assert src.decision.startswith("Recommended: even5")
        hashes.append({(ej.subset_name, ej.spec.job_hash) for ej in expand(grid, meta)})
    spelled = load_grid(reuse(folder, "spelled", root, lucky='strategy = "uniform"\nk = 5'))
    assert hashes[0] == hashes[1] == {(ej.subset_name, ej.spec.job_hash) for ej in expand(spelled, meta)}
    # exactly the earlier grid's classes and images
    earlier = resolve("even5", load_grid(folder / "study.toml").subsets["even5"], meta)
    taken = resolve("lucky", grid.subsets["lucky"], meta)
    assert taken.content_hash == earlier.content_hash == src.manifest_hash
    assert [c.wnid for c in taken.classes] == [c.wnid for c in earlier.classes]
    with pytest.raises(SubsetError, match=r"from: expected the classes and images of study's subset 'even5' .*"
                       "the dataset changed since that grid ran"):  # what a changed dataset (fingerprint) gives
        replace(src, manifest_hash="0" * 16).check("lucky", taken)
    # with its own [subsets.full], an audited ticket's grid runs every configuration there (nothing audit-only)
    both = take_tickets(load_grid(reuse(folder, "both", root, lucky=TICKET.format(source="study", audit=2))), db)
    assert not both.audit_only and both.audited
    assert sorted(ej.subset_name for ej in expand(both, meta)) == ["full"] * 5 + ["lucky"] * 5
    # grids without a ticket: untouched (the same object, the same recorded JSON)
    plain = load_grid(folder / "spelled.toml")
    assert take_tickets(plain, db) is plain and '"tickets"' not in plain.to_json()


@pytest.mark.parametrize(("source", "root", "expected"), [
    ("nosuch", None, "subsets.lucky.from: expected a grid recorded in the database (no grid 'nosuch'; recorded: "
                     "running, split, study)"),
    ("split", None, "subsets.lucky.from: expected a grid whose report recommends a subset ('split''s report says: "
                    "No subset meets"),
    ("running", None, "subsets.lucky.from: expected a grid whose report has decided ('running' is still running, "
                      "0/12 jobs completed; its report says: No subset meets"),
    ("study", "other", "subsets.lucky.from: expected a grid on this grid's dataset ("),
    ("reuse9", None, "subsets.lucky.from: expected an earlier grid, not this one"),
])
def test_a_ticket_refused_in_one_line(study: tuple[Path, str, Path], tmp_path: Path, source: str,
                                      root: str | None, expected: str) -> None:
    folder, db, digits = study
    data = digits
    if root is not None:
        data = tmp_path / root
        write_meta_dir(data, num_classes=10)
    path = reuse(tmp_path, "reuse9", data, lucky=TICKET.format(source=source, audit=0))
    with pytest.raises(SpecError) as err:
        take_tickets(load_grid(path), db)
    line = str(err.value)
    assert line.startswith(f"{path}: {expected}") and "\n" not in line, line


def test_the_cli_refuses_with_exit_2_and_records_nothing(study: tuple[Path, str, Path], tmp_path: Path) -> None:
    folder, db, root = study
    path = reuse(tmp_path, "nothing", root, lucky=TICKET.format(source="split", audit=2), more="")
    home = tmp_path / "home"
    for args in (("launch", str(path), "--no-progress"), ("launch", str(path), "--dry-run")):
        out = cli(*args, db=db, home=home, check=False)
        assert out.returncode == 2, out.stderr
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {path}: subsets.lucky.from: expected a grid whose report recommends a "
                               "subset ('split''s report says: No subset meets"), out.stderr
        assert "(closest: " in last
    assert Store(db).get_grid("nothing") is None and not (home / "jobs").exists()
    nodb = cli("launch", str(path), "--dry-run", db=f"sqlite:///{tmp_path / 'none.sqlite'}", home=home, check=False)
    assert nodb.returncode == 2 and "subsets.lucky.from: expected a grid recorded in the database" in nodb.stderr
    assert not (tmp_path / "none.sqlite").exists()


def test_bad_ticket_tables(tmp_path: Path, study: tuple[Path, str, Path]) -> None:
    _, _, root = study
    cases = {
        'strategy = "ticket"\nfrom = "study"\nfraction = 0.5': "subsets.lucky.fraction: expected no fraction on a "
                                                              "ticket",
        'strategy = "ticket"\nfrom = "study"\naudit = -1': "subsets.lucky.audit: expected a number of configurations",
        'strategy = "ticket"': "subsets.lucky.from: expected a value",
    }
    for lucky, expected in cases.items():
        path = reuse(tmp_path, "bad", root, lucky=lucky)
        with pytest.raises(SpecError, match=expected.replace("(", r"\(")):
            load_grid(path)
    no_ref = reuse(tmp_path, "noref", root, lucky=TICKET.format(source="study", audit=0), more="")
    with pytest.raises(SpecError, match=r"report.reference: .* or audit = N on subsets.lucky"):
        load_grid(no_ref)
    adaptive = reuse(tmp_path, "adapt", root, lucky=TICKET.format(source="study", audit=2), more="[adaptive]")
    with pytest.raises(SpecError, match=r"adaptive: expected no \[adaptive\] table in a grid whose ticket is audited"):
        load_grid(adaptive)


def test_spread_best_middle_worst() -> None:
    assert spread(5, 3) == [0, 2, 4] and spread(4, 3) == [0, 2, 3] and spread(2, 3) == [0, 1]
    assert spread(9, 1) == [0] and spread(7, 4) == [0, 2, 4, 6]


@pytest.mark.parametrize(("name", "lrs", "agrees"), [("agree", LRS, True),
                                                      ("disagree", "[0.11, 0.12, 0.13, 0.14, 0.15]", False)])
def test_audit_chooses_after_the_ticket_and_the_report_says(study: tuple[Path, str, Path], name: str, lrs: str,
                                                            agrees: bool) -> None:
    folder, db, root = study
    store = Store(db)
    grid = take_tickets(load_grid(reuse(folder, name, root, lucky=TICKET.format(source="study", audit=3), more="",
                                        lrs=lrs)), db)
    assert grid.audit_only == {"full"} and grid.audited
    meta = DatasetMeta.load(root)

    def record() -> object:
        return record_grid(store, grid, meta)

    record()
    assert {j.subset_name for j in store.jobs(name)} == {"lucky"}  # no audit job before the ticket's results
    assert "waiting for 5 jobs" in step(store, grid, record).message
    # the ticket ranks by lr; on full, the audited configurations keep (agree) or reverse (disagree) that order
    finish(store, name, lambda s, lr: lr, lambda s: 1.0)
    st = step(store, grid, record)
    assert st.added and "3 of 5 configurations of lucky on full" in st.message, st.message
    choice = recorded_audit(store, name)["lucky"]
    lrs_chosen = [lr_of(label) for label in choice.labels]
    assert choice.ranks == (1, 3, 5) and lrs_chosen == sorted(lrs_chosen, reverse=True)  # best, middle, worst
    full = store.jobs(name, [JobState.PENDING])
    assert sorted(lr_of(j.config_name) for j in full) == sorted(lrs_chosen) and {j.subset_name for j in full} == {
        "full"}
    assert not step(store, grid, record).added and len(store.jobs(name)) == 8  # idempotent
    finish(store, name, lambda s, lr: lr if agrees else -lr, lambda s: 4.0)
    report = produce(store, ReportRequest(grids=[name]), write=False).report
    entry = report.tickets[0]
    assert entry["agreement"]["agrees"] is agrees and entry["agreement"]["tau"] == (1.0 if agrees else -1.0)
    sav = entry["saving"]  # all 5 on full: 5 x 4 h; spent: 5 x 1 h on the ticket + 3 x 4 h of audit
    assert (sav["all_on_ref"], sav["spent"], sav["saved"]) == pytest.approx((20.0, 17.0, 3.0))
    sec = ticket_section(report)
    assert sec is not None and sec.title == TITLE
    text = "\n".join(sec.lines)
    assert ("the audit AGREES with the ticket" if agrees else "the audit DISAGREES with the ticket") in text, text
    assert f"{3 if agrees else 0:g} of 3 pairs in the same order" in text
    assert "saving (an estimate): running all 5 jobs on the reference would take ~20 CPU-h" in text
    assert "~3 CPU-h saved, 1.2x cheaper" in text
    assert "lucky is the ticket of grid study: its report recommended even5" in text
    assert [row[0] for row in sec.rows] == list(choice.labels)
    store.close()


def test_a_pinned_ticket_survives_a_changed_study(study: tuple[Path, str, Path], tmp_path: Path) -> None:
    """Relaunching keeps the ticket recorded at the first launch, even when the earlier grid's report changes."""
    folder, db, root = study
    db2 = f"sqlite:///{tmp_path / 'copy.sqlite'}"
    (tmp_path / "copy.sqlite").write_bytes((folder / "db.sqlite").read_bytes())
    store = Store(db2)
    grid = take_tickets(load_grid(reuse(tmp_path, "pinned", root, lucky=TICKET.format(source="study", audit=0))), db2)
    record_grid(store, grid, DatasetMeta.load(root))
    assert '"tickets"' in store.get_grid("pinned").spec_json
    with store.session() as s:  # the study is gone (renamed): a new ticket cannot be taken from it
        s.execute(update(Grid).where(Grid.name == "study").values(name="study-old"))
    fresh = reuse(tmp_path, "fresh", root, lucky=TICKET.format(source="study", audit=0))
    with pytest.raises(SpecError, match="no grid 'study'"):
        take_tickets(load_grid(fresh), db2)
    again = take_tickets(load_grid(tmp_path / "pinned.toml"), db2)
    assert again.tickets["lucky"] == grid.tickets["lucky"]
    report = produce(store, ReportRequest(grids=["pinned"]), write=False).report
    assert report.tickets[0]["source"]["subset"] == "even5"
    store.close()


def test_subsets_show_takes_the_ticket(study: tuple[Path, str, Path], tmp_path: Path) -> None:
    folder, db, root = study
    path = reuse(tmp_path, "shown", root, lucky=TICKET.format(source="study", audit=0))
    out = cli("subsets", "show", str(path), "--json", db=db, home=tmp_path / "home")
    lucky = json.loads(out.stdout)["subsets"]["lucky"]
    study_even5 = resolve("even5", load_grid(folder / "study.toml").subsets["even5"], DatasetMeta.load(root))
    assert lucky["strategy"] == "uniform" and lucky["hash"] == study_even5.content_hash, lucky
