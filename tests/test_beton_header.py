"""The control plane's ``.beton`` reader (numpy only) against files written by FFCV itself: the header,
every field type's description and metadata record, the allocation table, and damaged files (one line
each). FFCV is imported here only to write the files and to read them back as the reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.beton_header import read_alloc_table, read_header, read_metadata
from subsets import DatasetMetaError

from .conftest import REPO

N = 7


class _Samples:
    """One sample of every FFCV field type: float, int, image, bytes, array, JSON."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple:
        i = int(i)  # FFCV passes numpy integers (and a JSONField cannot encode those)
        rng = np.random.default_rng(i)
        image = rng.integers(0, 255, size=(6 + i, 9, 3), dtype=np.uint8)
        return (0.5 * i, 10 + i, image, np.arange(i + 1, dtype=np.uint8),
                np.full((2, 3), i, dtype=np.float32), {"sample": i})


@pytest.fixture(scope="module")
def every_field(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.data._ffcv import import_ffcv

    import_ffcv()
    from ffcv.fields import BytesField, FloatField, IntField, JSONField, NDArrayField, RGBImageField
    from ffcv.writer import DatasetWriter

    path = tmp_path_factory.mktemp("beton") / "every_field.beton"
    fields = {"score": FloatField(), "label": IntField(), "image": RGBImageField(write_mode="raw"),
              "blob": BytesField(), "features": NDArrayField(np.dtype("<f4"), (2, 3)), "info": JSONField()}
    DatasetWriter(str(path), fields, num_workers=1, page_size=1 << 21).from_indexed_dataset(_Samples())
    return path


def test_every_field_type_reads_as_ffcv_reads_it(every_field: Path) -> None:
    from ffcv.reader import Reader

    ref = Reader(str(every_field))
    h = read_header(every_field)
    assert h.num_samples == N == int(ref.num_samples) and h.page_size == 1 << 21
    assert h.field_names == ["score", "label", "image", "blob", "features", "info"] == ref.field_names
    assert [f.kind for f in h.fields] == ["FloatField", "IntField", "RGBImageField", "BytesField", "NDArrayField",
                                          "JSONField"]
    assert h.field("features").array_dtype == np.dtype("<f4") and h.field("features").array_shape == (2, 3)
    assert h.metadata_dtype.itemsize == ref.metadata_type.itemsize
    ours, theirs = read_metadata(h), ref.metadata
    for i, name in enumerate(h.field_names):
        assert np.array_equal(ours[name], theirs[f"f{i}"]), name
    assert ours["label"].tolist() == [10 + i for i in range(N)]
    assert ours["image"]["height"].tolist() == [6 + i for i in range(N)]
    assert np.array_equal(read_alloc_table(h), ref.alloc_table)


def test_the_digits_files_as_the_workers_write_them(digits: Path) -> None:
    meta = json.loads((digits / "meta.json").read_text())
    for split in ("train", "val"):
        h = read_header(digits / f"{split}.beton")
        assert h.num_samples == meta["splits"][split]["num_samples"]
        assert [(f.name, f.kind) for f in h.fields] == [("image", "RGBImageField"), ("label", "IntField")]
        assert np.array_equal(read_metadata(h)["label"], np.load(digits / f"{split}_labels.npy"))


def _damaged(tmp_path: Path, source: Path, edit: callable) -> Path:
    out = tmp_path / "damaged.beton"
    data = bytearray(source.read_bytes())
    out.write_bytes(bytes(edit(data)))
    return out


def _set(data: bytearray, at: int, value: bytes) -> bytearray:
    data[at:at + len(value)] = value
    return data


@pytest.mark.parametrize(("edit", "key", "words"), [
    (lambda d: d[:6400], "size", "truncated or overwritten"),  # the metadata table cut off
    (lambda d: d[:20], "header", "the file has 20: truncated"),
    (lambda d: d[:1000], "fields", "6 field descriptors (the file has 1000 bytes: truncated)"),
    (lambda d: d[:-10], "size", "truncated or overwritten"),  # the allocation table cut off
    (lambda d: _set(d, 0, b"\x01\x00"), "version", "FFCV format 2 (got 1"),
    (lambda d: _set(d, 24, b"\xff"), "field 'score'", "a custom field (type 255)"),
    (lambda d: _set(d, 24, b"\x09"), "field 'score'", "type id 9"),
    (lambda d: _set(d, 24 + 1041 * 4 + 17 + 256, (10 ** 6).to_bytes(8, "little")), "field 'features'",
     "an array field's element type"),
    (lambda d: b"<html>not a beton</html>" * 100, "version", "not a .beton file"),
])
def test_a_damaged_file_is_one_clear_error(tmp_path: Path, every_field: Path, edit: callable, key: str,
                                           words: str) -> None:
    path = _damaged(tmp_path, every_field, edit)
    with pytest.raises(DatasetMetaError) as err:
        read_header(path)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{path}: {key}: expected") and words in line, line


def test_a_missing_file_and_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetMetaError, match="train.beton: file: expected an FFCV .beton file \\(it is missing\\)"):
        read_header(tmp_path / "train.beton")
    with pytest.raises(DatasetMetaError, match="it is a directory"):
        read_header(tmp_path)


def test_reading_headers_imports_neither_ffcv_nor_numba_nor_torch(digits: Path) -> None:
    code = ("import sys; from orchestrator.preflight_data import check_data; from subsets import DatasetMeta; "
            f"check_data(DatasetMeta.load({str(digits)!r}), 'local'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ffcv', 'numba', 'torch', 'timm'}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
