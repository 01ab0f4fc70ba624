"""The shipped datasets: scikit-learn's real digits as a dataset, and the synthetic ImageNet-style folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import workers.data.write as write_mod
from subsets.meta import DatasetMeta
from workers.data.builtin import digits_images, prepare_digits
from workers.data.errors import DataWriteError
from workers.data.imagenet import imagenet_wnids
from workers.data.synthetic import make_synthetic_image_folder, render_image

pytestmark = pytest.mark.slow  # trains models / runs processes


def _raw_image(beton: Path, i: int) -> np.ndarray:
    """Sample ``i`` of a raw-mode .beton, read straight from the file (no loader)."""
    from ffcv.reader import Reader

    field = Reader(str(beton)).metadata["f0"][i]
    assert field["mode"] == 1  # raw
    h, w = int(field["height"]), int(field["width"])
    with open(beton, "rb") as fh:
        fh.seek(int(field["data_ptr"]))
        return np.frombuffer(fh.read(h * w * 3), dtype=np.uint8).reshape(h, w, 3)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DatasetMeta:
    return prepare_digits(tmp_path_factory.mktemp("digits") / "ds", image_size=16)


def test_digits_are_the_real_sklearn_digits_split_80_20(digits: DatasetMeta) -> None:
    assert digits.name == "digits-16px"
    assert [(c.wnid, c.name) for c in digits.classes[:2]] == [("digit0", "zero"), ("digit1", "one")]
    assert [c.wnid for c in digits.classes] == [f"digit{i}" for i in range(10)]
    train, val = digits.labels["train"], digits.labels["val"]
    assert len(train) + len(val) == 1797
    per_class = np.bincount(train, minlength=10) + np.bincount(val, minlength=10)
    np.testing.assert_array_equal(np.bincount(val, minlength=10), np.round(0.2 * per_class).astype(int))
    images, labels = digits_images(16)
    first_val = _raw_image(digits.beton_path("val"), 0)
    assert first_val.shape == (16, 16, 3)
    matches = [i for i in np.flatnonzero(labels == val[0]) if np.array_equal(images[i], first_val)]
    assert matches  # the stored pixels are one of the real digits of that class


def test_prepare_digits_is_idempotent(digits: DatasetMeta) -> None:
    stamps = {p.name: p.stat().st_mtime_ns for p in digits.root.iterdir()}
    again = prepare_digits(digits.root, image_size=16)
    assert again.fingerprint == digits.fingerprint
    assert {p.name: p.stat().st_mtime_ns for p in digits.root.iterdir()} == stamps


def test_prepare_digits_never_leaves_a_half_written_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    real = write_mod.write_beton
    calls = []

    def dies_on_val(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        calls.append(path)
        if ".val." in str(path):
            raise KeyboardInterrupt  # the user presses Ctrl-C while val is written
        return real(path, *args, **kwargs)

    monkeypatch.setattr(write_mod, "write_beton", dies_on_val)
    with pytest.raises(KeyboardInterrupt):
        prepare_digits(root, image_size=8)
    assert len(calls) == 2 and sorted(p.name for p in root.iterdir()) == []  # train's temp file is gone too
    monkeypatch.undo()
    meta = prepare_digits(root, image_size=8)
    assert DatasetMeta.load(root).fingerprint == meta.fingerprint
    meta.beton_path("val").unlink()  # an inconsistent dataset is rebuilt, not returned
    rebuilt = prepare_digits(root, image_size=8)
    assert rebuilt.beton_path("val").is_file() and rebuilt.fingerprint == meta.fingerprint


def test_synthetic_folder_uses_real_wnids_and_is_idempotent(tmp_path: Path) -> None:
    out = make_synthetic_image_folder(tmp_path / "syn", 4, 3, 2, min_size=40, max_size=60, seed=1, num_workers=1)
    wnids = imagenet_wnids()
    assert sorted(p.name for p in (out / "train").iterdir()) == [wnids[i] for i in (0, 250, 500, 750)]
    files = sorted(out.rglob("*.JPEG"))
    assert len(files) == 4 * (3 + 2)
    for f in files:
        with Image.open(f) as im:
            assert im.format == "JPEG" and min(im.size) >= 40 and max(im.size) <= 60
    stamps = [f.stat().st_mtime_ns for f in files]
    make_synthetic_image_folder(tmp_path / "syn", 4, 3, 2, min_size=40, max_size=60, seed=1, num_workers=1)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("user data")
    with pytest.raises(DataWriteError, match="output"):
        make_synthetic_image_folder(tmp_path / "other", 2, 1, 1, min_size=16, max_size=16)


def test_synthetic_classes_are_learnable() -> None:
    """A nearest-class-mean classifier on 16x16 thumbnails is far above chance (10%)."""
    rng = np.random.default_rng(0)
    feats, labels = [], []
    for c in range(10):
        for _ in range(30):
            img = Image.fromarray(render_image(c, 10, rng, 48, 80)).resize((16, 16))
            feats.append(np.asarray(img, dtype=np.float32).ravel() / 255)
            labels.append(c)
    x, y = np.array(feats), np.array(labels)
    train = np.arange(len(y)) % 30 < 20
    centroids = np.stack([x[train & (y == c)].mean(0) for c in range(10)])
    pred = ((x[~train][:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == y[~train]).mean() > 0.4
