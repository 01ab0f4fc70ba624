"""A non-editable install has every file: the package is built from a copy of the source tree (``pip
install --no-deps --no-build-isolation --target DIR``, the venv's own pip; the venv is not touched), then
``subsets show`` runs on the shipped WordNet hierarchy and ImageNet-100 list from that copy, with the
working directory outside the repository and only the copy on the path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from subsets import ClassInfo, DatasetMeta

pytestmark = pytest.mark.slow  # trains models / runs processes

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "workers", "subsets", "db", "specs", "cluster_profiles")
GRID = """
name = "pkg"
[dataset]
root = "in1k"
[subsets.full]
strategy = "full"
[subsets.in100]
strategy = "named"
list = "imagenet100"
[subsets.dogs]
strategy = "wordnet"
mode = "subtree"
roots = ["dog.n.01"]
[methods.supervised]
"""


def _data_files(root: Path) -> set[str]:
    """Every file of the packages that is not Python source (what package data must carry)."""
    return {str(p.relative_to(root)) for pkg in PACKAGES for p in (root / pkg).rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".dlth", "tests",
                                    ".pytest_cache", ".ruff_cache", "benchmarks", "examples")
    shutil.copytree(REPO, src, ignore=ignore, dirs_exist_ok=True)
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-compile", "--disable-pip-version-check", "--target", str(target), "."],
                          cwd=src, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "absent from the `packages` configuration" not in proc.stdout + proc.stderr, proc.stderr
    return target


def test_the_installed_copy_has_every_data_file(installed: Path) -> None:
    expected = _data_files(REPO)
    assert {"subsets/data/imagenet_hierarchy.json", "subsets/data/imagenet100.txt",
            "cluster_profiles/slurm-local.toml", "db/migrations/script.py.mako"} <= expected
    assert expected <= _data_files(installed)
    assert (installed / "db" / "migrations" / "versions" / "0001_initial.py").is_file()


def test_subsets_show_runs_from_the_installed_copy_outside_the_repo(installed: Path, tmp_path: Path) -> None:
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    classes = [ClassInfo(i, w, info.index_to_description(i).split(",")[0]) for i, w in enumerate(info.label_names())]
    DatasetMeta(tmp_path / "in1k", "in1k", classes, {"train": "train.beton", "val": "val.beton"},
                {"train": np.tile(np.arange(1000), 2), "val": np.arange(1000)}).save()
    (tmp_path / "grid.toml").write_text(GRID)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NLTK_DATA")}
    env["PYTHONPATH"] = str(installed)
    probe = ("import orchestrator, subsets, orchestrator.profiles as p; "
             "print(orchestrator.__file__, subsets.__file__, p.load_profile('slurm-local')['name'])")
    where = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert where.returncode == 0, where.stderr
    package_file, subsets_file, profile = where.stdout.split()
    assert package_file.startswith(str(installed)) and subsets_file.startswith(str(installed)), where.stdout
    assert profile == "slurm-local"  # a profile found in the installed copy
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "subsets", "show", "grid.toml", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    subs = json.loads(proc.stdout)["subsets"]
    assert subs["in100"]["num_classes"] == 100
    assert subs["dogs"]["num_classes"] == 118 and subs["dogs"]["details"]["wordnet"]["roots"] == ["dog.n.01"]
