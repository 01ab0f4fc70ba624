"""``dlth-orch watch``: frames of the shared trained grid (tests/opsview_grid.py) while a job ran and once all
ended; each frame costs one refresh per backend (counted on the real refresh); Ctrl-C ends it cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from db import Store
from orchestrator import status as status_mod
from orchestrator.grid import load_grid
from orchestrator.launch import record_grid
from orchestrator.watch_view import Frame, RunningJob, build_frame, eta_seconds, render, watch_loop
from subsets import DatasetMeta

from .opsview_grid import EPOCHS, GRID_NAME, TrainedGrid, cli, trained

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("opsview_grid")]  # one training per worker


@pytest.fixture(scope="module")
def trained_grid(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> TrainedGrid:
    return trained(tmp_path_factory, digits)


def test_a_frame_while_a_job_ran_shows_its_epoch_throughput_and_an_eta(trained_grid: TrainedGrid) -> None:
    frame = json.loads(trained_grid.running_frame)
    assert frame["grid"] == GRID_NAME and frame["total"] == 2
    assert {(g["config"], g["running"], g["queued"], g["done"]) for g in frame["groups"]} == {
        ("supervised[lr=0.05]", 1, 0, 0), ("supervised[lr=0.1]", 0, 1, 0)}
    (run,) = frame["running"]
    assert run["job"] == trained_grid.killed and run["epochs"] == EPOCHS and 2 <= run["epoch"] < EPOCHS
    assert run["images_per_s"] > 0 and run["epoch_time_s"] > 0 and run["heartbeat_age_s"] < 30
    assert frame["eta_s"] > 0 and frame["breaker"].startswith("closed")


def test_the_frame_of_the_finished_grid_and_its_terminal_form(trained_grid: TrainedGrid) -> None:
    t = trained_grid
    out = cli("watch", "--once", db=t.db, home=t.home)  # the only grid; no terminal: one frame, then exit
    assert out.returncode == 0, out.stderr
    assert f"{GRID_NAME}: 2/2 done" in out.stdout and "ETA 0m00s" in out.stdout and "breaker: closed" in out.stdout
    assert "supervised[lr=0.05]" in out.stdout and "running" not in out.stdout.split("\n", 2)[2]


def test_each_frame_costs_one_refresh_per_backend(trained_grid: TrainedGrid, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = status_mod.get_backend

    def counting(name: str):  # the real backend, its reconcile counted
        backend = real(name)
        reconcile = backend.reconcile
        monkeypatch.setattr(backend, "reconcile", lambda *a, **k: (calls.append(name), reconcile(*a, **k))[1])
        return backend

    monkeypatch.setattr(status_mod, "get_backend", counting)
    shown: list[Frame] = []
    with Store(trained_grid.db) as store:
        watch_loop(store, GRID_NAME, 0.0, shown.append, frames=3, stop_when_over=False)
    assert len(shown) == 3 and calls == ["local"] * 3
    assert all(sum(g["done"] for g in f.groups) == 2 for f in shown)
    render(shown[-1])  # renders without a terminal


def test_ctrl_c_ends_watch_cleanly(trained_grid: TrainedGrid, tmp_path: Path, digits: Path) -> None:
    t = trained_grid
    db = tmp_path / "copy.sqlite"
    shutil.copyfile(t.db.removeprefix("sqlite:///"), db)
    other = tmp_path / "other.toml"  # recorded, never run: watch has something to wait for
    other.write_text(t.grid_file.read_text().replace('name = "ops"', 'name = "ops_b"').replace("epochs = 4",
                                                                                             "epochs = 3"))
    with Store(f"sqlite:///{db}") as store:
        record_grid(store, load_grid(other), DatasetMeta.load(digits))
        frame = build_frame(store, "ops_b")
    assert [g["queued"] for g in frame.groups] == [1, 1] and frame.eta_s is None
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "watch", "ops_b", "--interval", "1",
                             "--db", f"sqlite:///{db}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DLTH_HOME": str(t.home)})
    try:
        out = ""
        while "ops_b: 0/2 done" not in out:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, proc.stderr.read()  # type: ignore[union-attr]
            out += line
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "watch stopped" in rest and "Traceback" not in err, err


def test_eta_from_completed_jobs_else_from_running_epochs() -> None:
    r = RunningJob(label="l", job="h", epoch=1, epochs=4, images_per_s=100.0, epoch_time_s=10.0,
                   heartbeat_age_s=1.0)
    assert eta_seconds(0, [], []) == 0.0
    assert eta_seconds(2, [], []) is None
    assert eta_seconds(2, [r], []) == pytest.approx((2 + 0.75) * 40.0)  # one at a time: 2.75 jobs of 40 s
    assert eta_seconds(2, [r, r], [100.0, 60.0]) == pytest.approx((2 + 1.5) * 80.0 / 2)
