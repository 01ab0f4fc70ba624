"""Grid files: every bad file gets one clear line naming the file, the key and what was expected; exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.grid import load_grid
from specs.base import SpecError

GOOD = """
name = "g"
seeds = [0, 1]
[dataset]
root = "ds"
[train]
epochs = 2
lr = 0.1
[subsets.full]
strategy = "full"
[subsets.half]
strategy = "uniform"
k = 3
[methods.supervised]
lr = [0.1, 0.2]
[methods.simclr]
temperature = [0.1, 0.2]
lr = [0.3, 0.4]
zip = [["temperature", "lr"]]
"""


def write(tmp: Path, text: str) -> Path:
    p = tmp / "grid.toml"
    p.write_text(text)
    return p


def test_good_grid_parses(tmp_path: Path, meta_dir: Path) -> None:
    g = load_grid(write(tmp_path, GOOD))
    assert g.name == "g"
    assert set(g.subsets) == {"full", "half"}
    assert g.subsets["half"] == {"strategy": "uniform", "k": 3, "mode": "even"}
    assert g.methods["simclr"].zips == [["temperature", "lr"]]
    assert g.dataset_root == str(meta_dir.resolve())


BAD = [
    # (replace this, with this, expected key in the message, expected words)
    ('name = "g"', 'name = ""', "name", "non-empty string"),
    ("epochs = 2", "epochs = 0", "train.epochs", ">= 1"),
    ("epochs = 2", 'epochs = "two"', "train.epochs", "an integer"),
    ("lr = 0.1\n[subsets", "lr = 0.1\nfoo = 1\n[subsets", "train.foo", "one of"),
    ('strategy = "uniform"', 'strategy = "unifrom"', "subsets.half.strategy", "one of"),
    ("k = 3", "k = -3", "subsets.half.k", "positive integer"),
    ("[methods.supervised]", "[methods.supervised]\nlabel_smoothing = 2.0", "methods.supervised.label_smoothing",
     "<= 1.0"),
    ("[methods.supervised]", "[methods.supervised]\nmomentumm = 0.9", "methods.supervised.momentumm",
     "hyperparameter"),
    ('zip = [["temperature", "lr"]]', 'zip = [["temperature", "epochs"]]', "methods.simclr.zip", "swept keys"),
    ("lr = [0.3, 0.4]", "lr = [0.3, 0.4, 0.5]", "methods.simclr.zip", "equal length"),
    ("seeds = [0, 1]", "seeds = [0, 0]", "seeds", "distinct"),
    ('root = "ds"', 'root = "missing"', "dataset.root", "meta.json"),
    ("[methods.simclr]", "[methods.simclr]\nmethod = \"dino9\"", "methods.simclr.method", "one of"),
    ('[subsets.full]\nstrategy = "full"', '[subsets.all]\nstrategy = "full"', "report.reference", "subset"),
    ("seeds = [0, 1]", "seeds = [0, 1]\ncolour = 3", "colour", "top-level"),
]


@pytest.mark.parametrize("old,new,key,words", BAD)
def test_bad_grid_names_file_key_and_expectation(tmp_path: Path, meta_dir: Path, old: str, new: str, key: str,
                                                  words: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(SpecError) as err:
        load_grid(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key}: expected"), msg
    assert words in msg
    assert "\n" not in msg


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "g"\n[dataset\n')
    with pytest.raises(SpecError, match=r"grid.toml: toml: expected valid TOML"):
        load_grid(path)


def launch_cli(grid: Path, db: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "launch", str(grid), "--db", f"sqlite:///{db}"],
                          capture_output=True, text=True, timeout=120)


def test_cli_bad_grid_exit_2_one_line_nothing_written(tmp_path: Path, meta_dir: Path) -> None:
    path = write(tmp_path, GOOD.replace("epochs = 2", "epochs = -1"))
    db = tmp_path / "db.sqlite"
    proc = launch_cli(path, db)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {path}: train.epochs: expected an integer >= 1"]
    assert not db.exists()


# backbones: checked by `launch` on PyTorch's meta device before anything is recorded
SMALL = GOOD.replace("lr = 0.1\n[subsets", 'lr = 0.1\nbackbone = "test_resnet"\nimage_size = 32\n[subsets')


def test_grid_backbones_that_the_workers_can_build_pass(tmp_path: Path, meta_dir: Path) -> None:
    from orchestrator.preflight import backbone_uses, check_backbones

    grid = load_grid(write(tmp_path, SMALL.replace("[methods.simclr]", '[methods.simclr]\nbackbone = "resnet18"')
                           .replace("[methods.supervised]", '[methods.supervised]\nbackbone = "vit_tiny_patch16_224"\n'
                                    'patch_size = [0, 4]')))
    assert backbone_uses(grid) == {("vit_tiny_patch16_224", 32, 0): "methods.supervised.backbone",
                                   ("vit_tiny_patch16_224", 32, 4): "methods.supervised.backbone",
                                   ("resnet18", 32, 0): "methods.simclr.backbone"}
    check_backbones(grid)  # a ViT is built for the grid's image size, not only its native 224 px


def test_a_vit_in_small_patches_has_as_many_tokens_as_patches() -> None:
    from specs.backbones import create_backbone

    vit = create_backbone("test_vit", 32, 4)
    assert vit.patch_embed.num_patches == 64 and create_backbone("test_vit", 32).patch_embed.num_patches == 4


@pytest.mark.parametrize(("table", "message"), [
    ('backbone = "test_resnet"\npatch_size = 4', "patch_size: expected 0 (the model's own) for a backbone without "
                                                "patches, got 4 for 'test_resnet'"),
    ('backbone = "test_vit"\npatch_size = 5', "patch_size: expected a divisor of image_size 32 (got 5)"),
])
def test_a_patch_size_the_backbone_cannot_take_is_a_grid_error(tmp_path: Path, meta_dir: Path, table: str,
                                                                message: str) -> None:
    path = write(tmp_path, SMALL.replace("[methods.supervised]", "[methods.supervised]\n" + table))
    with pytest.raises(SpecError) as info:
        load_grid(path)
    assert f"methods.supervised.{message}" in str(info.value)


@pytest.mark.parametrize(("old", "new", "message"), [
    ('backbone = "test_resnet"', 'backbone = "resnet5000"',
     "train.backbone: expected a timm model name (got 'resnet5000'; e.g. resnet50, vit_small_patch16_224)"),
    ('backbone = "test_resnet"\nimage_size = 32', 'backbone = "vit_tiny_patch16_224"\nimage_size = 8',
     "train.backbone: expected a timm model that takes 8 px images (train.image_size); vit_tiny_patch16_224: "
     "Calculated padded input size per channel: (8 x 8). Kernel size: (16 x 16)."),
    ("[methods.supervised]", '[methods.supervised]\nbackbone = ["test_resnet", "resnt18"]',
     "methods.supervised.backbone: expected a timm model name (got 'resnt18'"),
])
def test_grid_backbones_the_workers_cannot_build_are_refused(tmp_path: Path, meta_dir: Path, old: str, new: str,
                                                            message: str) -> None:
    from orchestrator.preflight import check_backbones

    path = write(tmp_path, SMALL.replace(old, new))
    with pytest.raises(SpecError) as info:
        check_backbones(load_grid(path))
    assert str(info.value).startswith(f"{path}: {message}")


@pytest.mark.slow  # trains, or compiles FFCV pipelines
def test_cli_unknown_backbone_exit_2_nothing_written(tmp_path: Path, meta_dir: Path) -> None:
    path = write(tmp_path, SMALL.replace('backbone = "test_resnet"', 'backbone = "resnet5000"'))
    db = tmp_path / "db.sqlite"
    proc = launch_cli(path, db)
    assert proc.returncode == 2, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        f"error: {path}: train.backbone: expected a timm model name (got 'resnet5000'; e.g. resnet50, "
        "vit_small_patch16_224)"]
    assert not db.exists()
