"""Shared fixtures: an isolated workspace per test, and small dataset metadata directories; the rules that
let the suite run in parallel (``pytest -n 3``, see :func:`pytest_collection_modifyitems`)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from subsets import ClassInfo, DatasetMeta
from tests import xdist_groups

# FFCV compiles its pipelines with numba; unoptimised compiles are about twice as fast and the tests'
# datasets are tiny (set before numba is first imported; inherited by worker subprocesses)
os.environ.setdefault("NUMBA_OPT", "0")
# one intra-op thread in the test process and in every subprocess a test starts (workers the product starts
# get theirs from cpus_per_task): on a loaded 2-core machine, spinning OpenMP threads make tiny steps ~100x
# slower, the more so with several xdist workers side by side
if os.environ.get("PYTEST_XDIST_WORKER"):  # xdist sets COLUMNS=80 in its workers: tests of piped output
    os.environ.pop("COLUMNS", None)       # (no terminal, no COLUMNS) would see an 80-column terminal
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# xdist groups: the tests of one group run one after another in one worker (``--dist loadgroup``)
SLURM_GROUP = "slurm"  # the single-node cluster (its tests run one after another: see the note below)
SLURM2_GROUP = "slurm2"  # the two-node cluster (a separate slurmctld)

REPO = Path(__file__).resolve().parents[1]


def _shares_module_fixtures(item: pytest.Item) -> bool:
    """Whether the test uses a module- or session-scoped fixture its own module defines (built once per
    worker that runs one of the module's tests: the module's tests belong together)."""
    module = item.nodeid.split("::")[0]
    info = getattr(item, "_fixtureinfo", None)
    defs = [d for ds in (info.name2fixturedefs.values() if info else ()) for d in ds]
    return any(d.scope in ("module", "session") and d.baseid == module for d in defs)


def _start_order(item: pytest.Item, slow_modules: set[str]) -> int:
    """When a test's work is handed out (the scheduler keeps this order): the SLURM groups, the longest
    chains of tests, first; then the slow modules; then the rest."""
    mark = item.get_closest_marker("xdist_group")
    if mark and mark.args[0] in (SLURM_GROUP, SLURM2_GROUP):
        return 0
    return 1 if item.nodeid.split("::")[0] in slow_modules else 2


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """xdist groups (``--dist loadgroup``; a group's tests run one after another in one worker): the SLURM
    tests of each cluster, and the tests of a module with a trained
    module fixture; every other test may run beside any other."""
    for item in items:
        if "slurm_cluster2" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group(SLURM2_GROUP))
        elif item.get_closest_marker("slurm") or "slurm_cluster" in item.fixturenames:
            # one group: split in two (side by side on the cluster's 4 CPUs), the breaker test once saw a task
            # end unheld (tests/test_reliability_slurm.py): serial until that race is understood
            item.add_marker(pytest.mark.xdist_group(SLURM_GROUP))
        elif item.get_closest_marker("xdist_group"):
            continue  # a group the test names itself (files sharing one session fixture, e.g. tests/opsview_grid.py)
        elif _shares_module_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    if os.environ.get("PYTEST_XDIST_WORKER") is not None:  # the longest work first: no long test at the end
        slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
        items.sort(key=lambda item: _start_order(item, slow))  # stable: modules stay together
    xdist_groups.record(items)


def pytest_configure(config: pytest.Config) -> None:
    """The controller of a ``--dist loadgroup`` run names the file its workers write their groups to."""
    xdist_groups.start(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    xdist_groups.finish()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup`` with the groups above (xdist's own does not see them under pytest 9)."""
    return xdist_groups.make_scheduler(config, log)


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own DLTH_HOME (default DB + job directories) and no inherited DLTH_DB."""
    home = tmp_path_factory.mktemp("dlth_home")
    monkeypatch.setenv("DLTH_HOME", str(home))
    monkeypatch.delenv("DLTH_DB", raising=False)
    return home


def write_meta_dir(root: Path, num_classes: int = 6, train_per_class: int = 10, val_per_class: int = 3) -> DatasetMeta:
    """A dataset directory with metadata only (no images): enough for grids, subsets and expansion."""
    classes = [ClassInfo(i, f"n{1000000 + i:08d}", f"class {i}") for i in range(num_classes)]
    labels = {
        "train": np.repeat(np.arange(num_classes), train_per_class),
        "val": np.repeat(np.arange(num_classes), val_per_class),
    }
    meta = DatasetMeta(root=root, name=root.name, classes=classes,
                       split_files={"train": "train.beton", "val": "val.beton"}, labels=labels)
    meta.save()
    return DatasetMeta.load(root)


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real handwritten-digits dataset at 32 px as FFCV .beton files (built once per run: under xdist
    the first worker builds it and the others use it). Read-only: a test that alters data copies it."""
    from workers.data.builtin import prepare_digits

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        root = tmp_path_factory.mktemp("digits") / "digits"
        prepare_digits(root, image_size=32)
        return root
    shared = tmp_path_factory.getbasetemp().parent  # xdist: the run's folder, above each worker's
    root = shared / "digits" / "digits"
    with (shared / "digits.lock").open("w") as lock:  # the first worker builds, the others wait for it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "digits" / "built").is_file():
            prepare_digits(root, image_size=32)
            (shared / "digits" / "built").touch()
    return root


@pytest.fixture
def meta_dir(tmp_path: Path) -> Path:
    write_meta_dir(tmp_path / "ds")
    return tmp_path / "ds"
