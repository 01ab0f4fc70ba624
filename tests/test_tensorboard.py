"""TensorBoard event files per job, read back with TensorBoard's own event reader: the shared grid's job
that was killed after two epochs and resumed (tests/opsview_grid.py) is one run whose steps go 0..3 once
each; an attempt that redoes epochs replaces them (purge) instead of doubling them."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from db import Store
from specs.contract import JobPaths
from workers.tensorboard_log import EpochBoard

from .opsview_grid import EPOCHS, GRID_NAME, TrainedGrid, trained

pytestmark = pytest.mark.xdist_group("opsview_grid")  # with --dist loadgroup: one training per worker


@pytest.fixture(scope="module")
def trained_grid(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> TrainedGrid:
    return trained(tmp_path_factory, digits)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_a_killed_and_resumed_job_is_one_run_whose_steps_only_go_up(trained_grid: TrainedGrid) -> None:
    t = trained_grid
    with Store(t.db) as store:
        job_dirs = {j.job_hash: Path(j.job_dir) for j in store.jobs(GRID_NAME)}
        attempts = len(store.attempts(t.killed))
    assert attempts == 2
    run = JobPaths.of(job_dirs[t.killed]).tensorboard
    assert len(list(run.glob("events.out.tfevents.*"))) == 2, "one event file per attempt, in one run"
    seen = scalars(run)
    for tag in ("train_loss", "lr", "images_per_s", "epoch_time_s"):
        assert [s for s, _ in seen[tag]] == list(range(EPOCHS)), (tag, seen[tag])
    assert all(v > 0 for _, v in seen["images_per_s"])
    final = {tag: pts for tag, pts in seen.items() if tag.startswith("final/")}
    assert final["final/knn_top1"] == [(EPOCHS - 1, pytest.approx(final["final/knn_top1"][0][1]))]
    assert 0 < final["final/knn_top1"][0][1] <= 1
    # the tags are what metrics.jsonl holds, for every job of the workspace under one --logdir
    runs = {p.parent.parent.name for p in t.home.glob("jobs/*/*/tensorboard/events.out.tfevents.*")}
    assert runs == set(job_dirs)


def test_an_attempt_that_redoes_epochs_replaces_them(tmp_path: Path) -> None:
    first = EpochBoard(tmp_path)
    for epoch in range(3):
        first.epoch(epoch, {"train_loss": 10.0 + epoch, "lr": 0.1})
    first.close()
    second = EpochBoard(tmp_path)  # resumed from the checkpoint of epoch 1 (epoch 2's was torn)
    for epoch in range(1, 4):
        second.epoch(epoch, {"train_loss": 20.0 + epoch, "lr": float("nan")})
    second.final({"knn_top1": 0.5}, 3)
    second.close()
    seen = scalars(tmp_path / "tensorboard")
    assert seen["train_loss"] == [(0, 10.0), (1, 21.0), (2, 22.0), (3, 23.0)]
    assert [s for s, _ in seen["lr"]] == [0], "a non-finite value is left out; the purge removed steps 1, 2"
    assert seen["final/knn_top1"] == [(3, 0.5)]


def test_an_unwritable_run_directory_never_fails_the_job(tmp_path: Path) -> None:
    (tmp_path / "tensorboard").write_text("a file where the run directory should be")
    board = EpochBoard(tmp_path)
    board.epoch(0, {"train_loss": 1.0})
    board.final({"knn_top1": 0.5}, 0)
    board.close()
    assert board.last_step is None
