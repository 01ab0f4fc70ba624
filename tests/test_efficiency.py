"""Per-attempt efficiency: measured in the real workers of the shared trained grid (tests/opsview_grid.py),
shown by ``show --json`` and ``status --json``, and the report's section that flags jobs below 30% of their
devices. The GPU path is tested with a mocked ``torch.cuda`` (there is no GPU here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db import AttemptState, Store
from db.usage import Usage
from orchestrator.efficiency import LOW_UTILISATION, job_usage
from orchestrator.grid import load_grid
from orchestrator.launch import record_grid
from orchestrator.report.efficiency_section import efficiency_section
from orchestrator.report.sections import EXTRA_SECTIONS
from subsets import DatasetMeta
from workers.usage import UsageMeter

from .opsview_grid import GRID_NAME, TrainedGrid, cli, trained

pytestmark = pytest.mark.xdist_group("opsview_grid")  # with --dist loadgroup: one training per worker


@pytest.fixture(scope="module")
def trained_grid(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> TrainedGrid:
    return trained(tmp_path_factory, digits)


@pytest.mark.slow
def test_real_workers_record_what_they_used_and_show_and_status_say_it(trained_grid: TrainedGrid) -> None:
    t = trained_grid
    with Store(t.db) as store:
        attempts = store.grid_attempts(GRID_NAME)
    done = [a for a in attempts if a.state == AttemptState.COMPLETED]
    assert len(done) == 2
    for a in done:
        u = a.usage
        assert u is not None and u.source == "worker" and u.gpu_util is None and u.gpu_mem_peak_mb is None
        assert u.cpu_time_s > 1 and 0 < u.cpu_util < 1.5 and 100 < u.max_rss_mb < 16_000, u
    killed = [a for a in attempts if a.state != AttemptState.COMPLETED]
    assert [a.usage for a in killed] == [None], "a worker killed by SIGKILL could not say what it used"

    view = json.loads(cli("show", t.killed[:12], "--json", db=t.db, home=t.home).stdout)
    assert [a["usage"] is not None for a in view["attempts"]] == [False, True]
    assert view["attempts"][1]["usage"]["cpu_util"] == pytest.approx(done[0].usage.cpu_util
                                                                     if done[0].job_hash == t.killed
                                                                     else done[1].usage.cpu_util)
    shown = cli("show", t.killed[:12], db=t.db, home=t.home).stdout
    assert "%/core" in shown and "MiB" in shown
    [status] = json.loads(cli("status", GRID_NAME, "--json", db=t.db, home=t.home).stdout)  # one grid: a list of one
    assert {u["job"] for u in status["usage"]} == {a.job_hash for a in done}
    assert all(u["device"] == "cpu" and u["low"] == (u["cpu_util"] < LOW_UTILISATION) for u in status["usage"])


@pytest.mark.slow
def test_the_report_has_an_efficiency_section_true_to_the_measurements(trained_grid: TrainedGrid,
                                                                         tmp_path: Path) -> None:
    t = trained_grid
    out = cli("report", GRID_NAME, "--out", str(tmp_path / "rep"), db=t.db, home=t.home)
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    with Store(t.db) as store:
        rows = job_usage(store, GRID_NAME)
    low = [r for r in rows if r["cpu_util"] < LOW_UTILISATION]  # the machine is shared: either may happen
    assert "Efficiency" in md
    if low:
        assert f"{len(low)} of 2 measured jobs used less than 30% of their devices" in md
    else:
        assert "every one of the 2 measured jobs used at least 30% of its devices" in md
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["efficiency"] == json.loads(
        json.dumps(rows))


def test_the_section_flags_jobs_below_30_percent_of_their_devices(tmp_path: Path, meta_dir: Path) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(f'name = "eff"\nseeds = [0, 1, 2]\n[dataset]\nroot = "{meta_dir}"\n[train]\n'
                    'backbone = "test_resnet"\nepochs = 1\nimage_size = 32\n[subsets.full]\nstrategy = "full"\n'
                    "[methods.supervised]\n")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    jobs = [j.spec.job_hash for j in record_grid(store, load_grid(grid), DatasetMeta.load(meta_dir)).jobs]
    given = [Usage(cpu_time_s=10, cpu_util=0.9, max_rss_mb=500, source="worker"),  # a busy CPU job
             Usage(cpu_time_s=10, cpu_util=0.9, max_rss_mb=500, gpu_util=0.12, gpu_mem_peak_mb=900,
                   source="worker"),  # busy CPU, idle GPU: the GPU is what it was given
             Usage(cpu_time_s=1, cpu_util=0.05, max_rss_mb=300, source="sacct")]
    for h, u in zip(jobs, given, strict=True):
        attempt = store.claim(h, backend="local", backend_id=None, host="h", pid=1)
        store.set_attempt_usage(attempt, u)
        store.finish_attempt(attempt, AttemptState.COMPLETED)
    rows = job_usage(store, "eff")
    assert sorted((r["device"], r["low"]) for r in rows) == [("cpu", False), ("cpu", True), ("gpu", True)]

    class Rep:  # the one field the section reads
        efficiency = tuple(rows)

    sec = efficiency_section(Rep())  # type: ignore[arg-type]
    assert efficiency_section in EXTRA_SECTIONS and sec is not None
    assert sec.lines[0].startswith("2 of 3 measured jobs used less than 30% of their devices (1 on GPUs")
    assert [(r[2], r[3]) for r in sec.rows] == [("cpu", "5%"), ("gpu", "12%")]
    Rep.efficiency = ()
    assert efficiency_section(Rep()) is None  # type: ignore[arg-type]


def test_the_meter_reads_the_jobs_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    # no GPU here: torch.cuda is mocked to report one (device 1, 40% then 20% busy, 2 GiB peak)
    busy = iter([40, 20])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "utilization", lambda device: next(busy) if device == 1 else 100)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 2 * 1024**3 if device == 1 else 0)
    meter = UsageMeter(cores=2)
    sum(i * i for i in range(200_000))  # some CPU time
    meter.sample()
    meter.sample()
    u = meter.usage()
    assert u.gpu_util == pytest.approx(0.30) and u.gpu_mem_peak_mb == 2048 and u.device_util() == u.gpu_util
    assert u.cpu_time_s > 0 and 0 < u.cpu_util <= 1.0 and u.max_rss_mb > 10
