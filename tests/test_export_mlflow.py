"""``dlth-orch export GRID --to mlflow URI`` into MLflow's real tracking stores (SQLite, and the file store),
from the shared trained grid (tests/opsview_grid.py): experiment = grid, one run per job found again by its
hash, so a second export adds nothing; without MLflow, one line and exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from db import Store

from .opsview_grid import EPOCHS, GRID_NAME, TrainedGrid, cli, trained

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("opsview_grid")]  # one training per worker


@pytest.fixture(scope="module")
def trained_grid(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> TrainedGrid:
    return trained(tmp_path_factory, digits)


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(GRID_NAME)
    assert exp is not None
    return client.search_runs([exp.experiment_id])


def test_export_writes_one_run_per_job_and_a_second_export_adds_nothing(trained_grid: TrainedGrid,
                                                                          tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    t = trained_grid
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = cli("export", GRID_NAME, "--to", "mlflow", uri, db=t.db, home=t.home)
    assert out.returncode == 0 and "2 runs created, 0 updated" in out.stdout, out.stdout + out.stderr
    with Store(t.db) as store:
        jobs = {j.job_hash: j for j in store.jobs(GRID_NAME)}
        finals = store.final_metrics(GRID_NAME)
    runs = _runs(uri)
    assert {r.data.tags["dlth.job_hash"] for r in runs} == set(jobs)
    client = MlflowClient(tracking_uri=uri)
    for run in runs:
        j = jobs[run.data.tags["dlth.job_hash"]]
        assert run.info.run_name == f"full/{j.config_name}/s0" and run.info.status == "FINISHED"
        assert {k: run.data.tags[k] for k in ("subset", "method", "configuration", "seed")} == {
            "subset": "full", "method": "supervised", "configuration": j.config_name, "seed": "0"}
        assert run.data.params["train.epochs"] == str(EPOCHS) and run.data.params["method"] == "supervised"
        assert run.data.params["train.lr"] == {"supervised[lr=0.05]": "0.05", "supervised[lr=0.1]": "0.1"}[
            j.config_name]
        loss = client.get_metric_history(run.info.run_id, "train_loss")
        assert sorted(p.step for p in loss) == list(range(EPOCHS)), "each epoch once, the killed job's too"
        knn = client.get_metric_history(run.info.run_id, "knn_top1")
        assert [(p.step, p.value) for p in knn] == [(EPOCHS, pytest.approx(finals[j.job_hash]["knn_top1"]))]
    points = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "train_loss")) for r in runs}

    again = cli("export", GRID_NAME, "--to", "mlflow", uri, db=t.db, home=t.home)
    assert again.returncode == 0 and "0 runs created, 2 updated, 0 metric points" in again.stdout, again.stdout
    runs2 = _runs(uri)
    assert len(runs2) == 2
    assert {r.info.run_id: len(client.get_metric_history(r.info.run_id, "train_loss")) for r in runs2} == points


def test_export_to_mlflows_file_store(trained_grid: TrainedGrid, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    t = trained_grid
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store without it
    for expected in ("2 runs created", "0 runs created, 2 updated, 0 metric points"):
        out = cli("export", GRID_NAME, "--to", "mlflow", uri, db=t.db, home=t.home)
        assert out.returncode == 0 and expected in out.stdout, out.stdout + out.stderr
    assert len(_runs(uri)) == 2


def test_without_mlflow_export_says_how_to_get_it(trained_grid: TrainedGrid, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli import cli as dlth

    # mlflow is installed here: hide it (None in sys.modules makes its import fail) as where it is not
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(dlth, ["export", GRID_NAME, "--to", "mlflow", uri, "--db", trained_grid.db])
    assert result.exit_code == 2 and not (tmp_path / "mlflow.db").exists()
    assert result.output.strip().splitlines() == ["error: MLflow is not installed: pip install -e .[mlflow]"]
    both = CliRunner().invoke(dlth, ["export", GRID_NAME, "--to", "mlflow", uri, "--out", str(tmp_path),
                                     "--db", trained_grid.db])
    assert both.exit_code == 2 and "exactly one of --out DIR or --to mlflow URI" in both.output
