"""Fashion-MNIST as a builtin dataset, read from the real files of Debian's ``dataset-fashion-mnist``.

Only shards are read (the first records of each IDX file, a few images per class), so the module stays
fast. Bad files are made from the real ones (truncated gzip, a labels file where images are expected).
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.grid import BUILTIN_DATASETS, load_grid
from orchestrator.launch import ensure_dataset
from specs.base import SpecError
from subsets.meta import DatasetMeta
from tests.test_subsets_wordnet import corpus, corpus_dir  # noqa: F401 (fixtures)
from workers.data.builtin import BUILTINS, prepare_builtin
from workers.data.errors import DataWriteError
from workers.data.fashion_mnist import (
    FASHION_CLASSES,
    FILES,
    IMAGE_MAGIC,
    LABEL_MAGIC,
    PACKAGE,
    SOURCE_DIR,
    prepare_fashion_mnist,
    read_idx,
    read_split,
)

DOC = Path("/usr/share/doc/dataset-fashion-mnist/README.md.gz")
APT = f"apt-get install -y --no-install-recommends {PACKAGE}"


def _raw_image(beton: Path, i: int) -> np.ndarray:
    from ffcv.reader import Reader

    field = Reader(str(beton)).metadata["f0"][i]
    h, w = int(field["height"]), int(field["width"])
    with open(beton, "rb") as fh:
        fh.seek(int(field["data_ptr"]))
        return np.frombuffer(fh.read(h * w * 3), dtype=np.uint8).reshape(h, w, 3)


def test_idx_files_of_the_package_parse_to_the_standard_shapes() -> None:
    train_labels = read_idx(SOURCE_DIR / FILES["train"][1], LABEL_MAGIC)
    assert train_labels.shape == (60000,) and train_labels.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(train_labels), [6000] * 10)
    np.testing.assert_array_equal(train_labels[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])  # the published order
    val_labels = read_idx(SOURCE_DIR / FILES["val"][1], LABEL_MAGIC, limit=10)
    np.testing.assert_array_equal(val_labels, [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
    images = read_idx(SOURCE_DIR / FILES["train"][0], IMAGE_MAGIC, limit=3)  # a shard: 3 of 60,000
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8
    assert images[0].sum() == 76247 and images.max() == 255  # a real photo, not zeros


def test_class_names_are_the_documented_ones_with_wordnet_ids() -> None:
    doc = gzip.decompress(DOC.read_bytes()).decode()
    rows = re.findall(r"^\| (\d) \| ([^|]+?) \|$", doc, flags=re.M)
    assert [(int(i), name) for i, name in rows] == [(c.index, c.name) for c in FASHION_CLASSES]
    assert [c.name for c in FASHION_CLASSES][:3] == ["T-shirt/top", "Trouser", "Pullover"]
    assert all(re.fullmatch(r"n\d{8}", c.wnid) for c in FASHION_CLASSES)
    assert FASHION_CLASSES[7].wnid == "n03472535" and FASHION_CLASSES[9].wnid == "n02872752"  # gym_shoe, boot
    assert len({c.wnid for c in FASHION_CLASSES}) == 10


def test_read_split_keeps_the_first_images_of_each_class() -> None:
    images, labels = read_split(SOURCE_DIR, "val", per_class=2)
    np.testing.assert_array_equal(np.bincount(labels), [2] * 10)
    first = read_idx(SOURCE_DIR / FILES["val"][0], IMAGE_MAGIC, limit=1)[0]
    assert labels[0] == 9 and np.array_equal(images[0], first)  # file order is kept


@pytest.fixture
def bad_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "fm"
    folder.mkdir()
    for split in ("train", "val"):
        for name in FILES[split]:
            if name.startswith("t10k"):
                shutil.copy(SOURCE_DIR / name, folder / name)
    return folder


def test_bad_or_missing_files_are_one_line_errors(bad_dir: Path) -> None:
    labels = bad_dir / FILES["val"][1]
    data = labels.read_bytes()
    labels.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataWriteError, match=r"t10k-labels-idx1-ubyte\.gz: gzip: expected a complete gzip") as exc:
        read_split(bad_dir, "val", per_class=1)
    assert "\n" not in str(exc.value)
    with pytest.raises(DataWriteError, match=r"t10k-labels.*magic: expected the IDX magic number 2051"):
        read_idx(SOURCE_DIR / FILES["val"][1], IMAGE_MAGIC)  # a labels file where images belong
    (bad_dir / "plain").write_bytes(b"not gzip at all")
    with pytest.raises(DataWriteError, match="plain: gzip"):
        read_idx(bad_dir / "plain", LABEL_MAGIC)
    images = bad_dir / FILES["val"][0]
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:16 + 784 * 5]))  # 5 of 10,000
    with pytest.raises(DataWriteError, match=r"t10k-images-idx3-ubyte\.gz: data: expected 7 records"):
        read_idx(images, IMAGE_MAGIC, limit=7)
    with pytest.raises(DataWriteError, match=f"train-labels-idx1-ubyte.gz: file: expected .*{APT}"):
        read_split(bad_dir, "train")
    with pytest.raises(DataWriteError, match=f"nowhere: directory: expected the Debian package .*{APT}"):
        prepare_fashion_mnist(bad_dir / "out", source_dir=bad_dir / "nowhere")
    assert not (bad_dir / "out").exists()  # nothing written


def test_cli_without_the_package_says_the_apt_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "data", "prepare", "fashion-mnist", str(tmp_path / "out"),
         "--source", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and APT in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # trains, or compiles FFCV pipelines
def test_grid_prepare_fashion_mnist_builds_a_small_shard(tmp_path: Path) -> None:
    grid_file = tmp_path / "g.toml"
    grid_file.write_text(
        'name = "fm"\n[dataset]\nroot = "ds"\nprepare = "fashion-mnist"\ntrain_per_class = 3\nval_per_class = 2\n'
        '[train]\nimage_size = 16\n[subsets.full]\nstrategy = "full"\n[methods.supervised]\n')
    grid = load_grid(grid_file)
    assert grid.dataset_limits == {"train_per_class": 3, "val_per_class": 2}
    meta = ensure_dataset(grid)
    assert meta.name == "fashion-mnist-16px-3x2" and meta.classes == FASHION_CLASSES
    np.testing.assert_array_equal(np.bincount(meta.labels["train"]), [3] * 10)
    np.testing.assert_array_equal(np.bincount(meta.labels["val"]), [2] * 10)
    first = read_idx(SOURCE_DIR / FILES["train"][0], IMAGE_MAGIC, limit=1)[0]
    stored = _raw_image(meta.beton_path("train"), 0)
    assert stored.shape == (16, 16, 3) and meta.labels["train"][0] == 9
    expected = np.asarray(Image.fromarray(first).resize((16, 16), Image.BICUBIC))
    assert np.array_equal(stored[..., 0], expected) and np.array_equal(stored[..., 2], expected)
    stamps = {p.name: p.stat().st_mtime_ns for p in meta.root.iterdir()}
    again = prepare_builtin("fashion-mnist", meta.root, 16, train_per_class=3, val_per_class=2)
    assert again.fingerprint == DatasetMeta.load(meta.root).fingerprint  # idempotent: nothing rewritten
    assert {p.name: p.stat().st_mtime_ns for p in meta.root.iterdir()} == stamps


def test_builtin_registry_and_grid_validation(tmp_path: Path) -> None:
    from workers.data.cli import prepare_cmd

    assert set(BUILTIN_DATASETS) == set(BUILTINS) == set(prepare_cmd.params[0].type.choices)
    with pytest.raises(DataWriteError, match="train_per_class: expected no such option for the digits"):
        prepare_builtin("digits", tmp_path / "d", 8, train_per_class=5)
    grid_file = tmp_path / "g.toml"
    base = '[train]\nimage_size = 16\n[subsets.full]\nstrategy = "full"\n[methods.supervised]\n'
    grid_file.write_text('name = "x"\n[dataset]\nroot = "ds"\ntrain_per_class = 3\n' + base)
    with pytest.raises(SpecError, match=r"g\.toml: dataset\.train_per_class: expected .* with prepare"):
        load_grid(grid_file)
    grid_file.write_text('name = "x"\n[dataset]\nroot = "ds"\nprepare = "fashion-mnist"\nval_per_class = 0\n' + base)
    with pytest.raises(SpecError, match=r"dataset\.val_per_class"):
        load_grid(grid_file)


def test_class_ids_are_the_wordnet_synsets_so_hierarchy_subsets_work(corpus, tmp_path: Path) -> None:  # noqa: F811
    from subsets import resolve, validate_table
    from workers.data.fashion_mnist import _CLASSES

    for info, (_, synset, _) in zip(FASHION_CLASSES, _CLASSES, strict=True):
        assert corpus.synset_from_pos_and_offset("n", int(info.wnid[1:])).name() == synset
    labels = {"train": np.repeat(np.arange(10), 2), "val": np.arange(10)}
    DatasetMeta(tmp_path, "fm", FASHION_CLASSES, {"train": "t", "val": "v"}, labels).save()
    table = validate_table({"strategy": "wordnet", "mode": "subtree", "roots": ["footwear.n.02"]})
    footwear = resolve("footwear", table, DatasetMeta.load(tmp_path))
    assert sorted(c.name for c in footwear.classes) == ["Ankle boot", "Sandal", "Sneaker"]
