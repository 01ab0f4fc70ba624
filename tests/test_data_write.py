"""``dlth-orch data write`` against real files: metadata, bad inputs, --skip-bad, interruption, CLI errors."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from subsets.meta import DatasetMeta
from tests.data_fixtures import make_id_folder
from workers.data.cli import data
from workers.data.errors import DataWriteError
from workers.data.write import write_image_folder

FAST = dict(max_resolution=64, page_size=2**21, num_workers=1, progress=False)


def _folder(tmp_path: Path, classes: int = 3, train: int = 3, val: int = 2) -> tuple[Path, dict[str, np.ndarray]]:
    labels = make_id_folder(tmp_path / "src", classes, train, val)
    return tmp_path / "src", labels


def _first_image(src: Path, split: str = "train") -> Path:
    return sorted((src / split).glob("*/*.png"))[0]


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")] and not list(
        out.glob(".*.partial*")
    )


def _assert_one_line(exc: pytest.ExceptionInfo, path: Path, key: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {key}: expected "), msg


def test_write_metadata_names_and_extensions(tmp_path: Path) -> None:
    src, labels = _folder(tmp_path)
    # a non-wnid class, every accepted extension, and a stray file that is ignored
    for split in ("train", "val"):
        folder = src / split / "zz_custom"
        folder.mkdir()
        for ext in (".JPEG", ".jpg", ".jpeg", ".PNG"):
            fmt = "PNG" if ext.lower() == ".png" else "JPEG"
            Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(folder / f"a{ext}", format=fmt)
        (folder / "notes.txt").write_text("not an image")
    meta = write_image_folder(src, tmp_path / "ds", write_mode="jpg", **FAST)
    loaded = DatasetMeta.load(tmp_path / "ds")
    assert loaded.fingerprint == meta.fingerprint and meta.num_classes == 4
    assert meta.classes[0].name == "tench, Tinca tinca"  # timm's offline ImageNet names
    assert (meta.classes[3].wnid, meta.classes[3].name) == ("zz_custom", "zz_custom")
    for split in ("train", "val"):
        np.testing.assert_array_equal(meta.labels[split], np.concatenate([labels[split], [3, 3, 3, 3]]))
        from ffcv.reader import Reader

        assert Reader(str(meta.beton_path(split))).num_samples == len(meta.labels[split])
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        "meta.json", "train.beton", "train_labels.npy", "val.beton", "val_labels.npy"
    ]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_fails_naming_the_path(tmp_path: Path, damage: str) -> None:
    src, _ = _folder(tmp_path)
    bad = sorted((src / "val").glob("*/*.png"))[-1]
    if damage == "garbage":
        bad.write_bytes(b"this is not an image" * 50)
    else:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(bad, "PNG")
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(DataWriteError) as exc:
        write_image_folder(src, tmp_path / "ds", **FAST)
    _assert_one_line(exc, bad, "image")
    assert _nothing_written(tmp_path / "ds")


def test_empty_class_folder_fails(tmp_path: Path) -> None:
    src, _ = _folder(tmp_path)
    empty = sorted((src / "train").iterdir())[1]
    for f in empty.iterdir():
        f.unlink()
    with pytest.raises(DataWriteError) as exc:
        write_image_folder(src, tmp_path / "ds", **FAST)
    _assert_one_line(exc, empty, "images")
    assert _nothing_written(tmp_path / "ds")


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_val_classes_must_match_train(tmp_path: Path, change: str) -> None:
    src, _ = _folder(tmp_path)
    if change == "missing":
        victim = sorted((src / "val").iterdir())[0]
        for f in victim.iterdir():
            f.unlink()
        victim.rmdir()
    else:
        (src / "val" / "n99999999").mkdir()
    with pytest.raises(DataWriteError) as exc:
        write_image_folder(src, tmp_path / "ds", **FAST)
    _assert_one_line(exc, src / "val", "classes")
    assert ("missing in val" if change == "missing" else "n99999999") in str(exc.value)


def test_unreadable_paths_fail(tmp_path: Path) -> None:
    with pytest.raises(DataWriteError) as exc:
        write_image_folder(tmp_path / "nowhere", tmp_path / "ds", **FAST)
    _assert_one_line(exc, tmp_path / "nowhere", "source")
    src, _ = _folder(tmp_path)
    link = src / "train" / sorted(os.listdir(src / "train"))[0] / "zz_dangling.JPEG"
    link.symlink_to(tmp_path / "gone.JPEG")  # root reads any mode, so a dangling link is the unreadable file
    with pytest.raises(DataWriteError) as exc:
        write_image_folder(src, tmp_path / "ds", **FAST)
    _assert_one_line(exc, link, "image")
    link.unlink()
    for f in (src / "val").rglob("*.png"):
        f.unlink()
    for d in (src / "val").iterdir():
        d.rmdir()
    (src / "val").rmdir()
    with pytest.raises(DataWriteError) as exc:
        write_image_folder(src, tmp_path / "ds", **FAST)
    _assert_one_line(exc, src / "val", "val")
    assert _nothing_written(tmp_path / "ds")


def test_skip_bad_skips_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src, labels = _folder(tmp_path, classes=4, train=3, val=2)
    class_dirs = sorted((src / "train").iterdir())
    _first_image(src).write_bytes(b"garbage")  # class 0 keeps 2 of 3 train images
    (class_dirs[1] / "zz_dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    for f in class_dirs[2].iterdir():  # class 2 is dropped (and its val images skipped)
        f.unlink()
    caplog.set_level("INFO")
    meta = write_image_folder(src, tmp_path / "ds", skip_bad=True, **FAST)
    assert [c.wnid for c in meta.classes] == [class_dirs[i].name for i in (0, 1, 3)]
    np.testing.assert_array_equal(meta.labels["train"], [0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(meta.labels["val"], [0, 0, 1, 1, 2, 2])
    skipped = (tmp_path / "ds" / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 5  # garbage image, dangling link, empty folder, 2 val images of the dropped class
    assert any(line.startswith("undecodable\t") and line.endswith("0000.png") for line in skipped)
    assert "skipped 5 entries" in caplog.text


def test_options_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    src, _ = _folder(tmp_path)
    out = tmp_path / "ds"
    cases = [
        (dict(page_size=2**20), "page_size"),
        (dict(page_size=3 * 2**20), "page_size"),
        (dict(write_mode="raw", max_resolution=1024, page_size=2**21), "page_size"),
        (dict(write_mode="smart"), "write_mode"),
        (dict(jpeg_quality=0), "jpeg_quality"),
        (dict(compress_probability=1.5), "compress_probability"),
        (dict(num_workers=0), "num_workers"),
    ]
    for kwargs, key in cases:
        with pytest.raises(DataWriteError) as exc:
            write_image_folder(src, out, **{**FAST, **kwargs})
        _assert_one_line(exc, out, key)
    assert not out.exists()


def test_existing_dataset_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    src, _ = _folder(tmp_path, classes=2, train=2, val=1)
    first = write_image_folder(src, tmp_path / "ds", write_mode="proportion", **FAST)
    with pytest.raises(DataWriteError) as exc:
        write_image_folder(src, tmp_path / "ds", **FAST)
    _assert_one_line(exc, tmp_path / "ds" / "meta.json", "output")
    again = write_image_folder(src, tmp_path / "ds", overwrite=True, write_mode="raw", **FAST)
    assert again.fingerprint == first.fingerprint


def _slow_write(src: str, out: str, loaded: Any) -> None:
    """Write ``src`` slowly (50 ms an image), counting the images read in ``loaded`` (shared memory that the
    writer's forked processes inherit)."""
    import workers.data.write as w

    real = w.load_rgb

    def slow(path: str, max_resolution: int | None = None) -> np.ndarray:
        time.sleep(0.05)
        with loaded.get_lock():
            loaded.value += 1
        return real(path, max_resolution)

    w.load_rgb = slow
    w.write_image_folder(src, out, **FAST)


def _holders(path_prefix: str) -> list[int]:
    """PIDs with a file under ``path_prefix`` open."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(path_prefix):
                    pids.append(int(pid))
                    break
            except OSError:
                continue
    return pids


def test_killed_write_leaves_no_final_file_and_a_rerun_works(tmp_path: Path) -> None:
    src, labels = _folder(tmp_path, classes=3, train=40, val=4)
    out = tmp_path / "ds"
    ctx = mp.get_context("fork")
    loaded = ctx.Value("i", 0)
    proc = ctx.Process(target=_slow_write, args=(str(src), str(out), loaded))
    proc.start()
    deadline = time.monotonic() + 60  # killed in the middle of the train file: its partial file exists and
    while not (list(out.glob(".train.beton.partial-*")) and loaded.value >= 5) and time.monotonic() < deadline:
        time.sleep(0.02)  # some of its 120 images were read
    assert loaded.value < 120, "the writer finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # like a node losing the job: no cleanup runs
    proc.join()
    assert list(out.glob(".train.beton.partial-*"))
    assert not [p.name for p in out.iterdir() if not p.name.startswith(".")]  # no final-named file
    deadline = time.monotonic() + 10
    while _holders(str(out)) and time.monotonic() < deadline:  # its writer processes die with it
        time.sleep(0.1)
    assert not _holders(str(out))
    meta = write_image_folder(src, out, **FAST)
    np.testing.assert_array_equal(meta.labels["train"], labels["train"])
    assert not list(out.glob(".*partial*"))


def test_cli_reports_bad_input_on_one_line_with_exit_code_2(tmp_path: Path) -> None:
    src, _ = _folder(tmp_path)
    bad = _first_image(src, "val")
    bad.write_bytes(b"broken")
    result = CliRunner().invoke(data, ["write", str(src), str(tmp_path / "ds"), "--num-workers", "1",
                                       "--page-size", str(2**21)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: {bad}: image: expected a decodable")
    result = CliRunner().invoke(data, ["write", str(src), str(tmp_path / "ds"), "--page-size", "4096"])
    assert result.exit_code == 2 and "page_size: expected a power of two" in result.stderr
    bad.unlink()
    result = CliRunner().invoke(data, ["write", str(src), str(tmp_path / "ds"), "--num-workers", "1",
                                       "--page-size", str(2**21), "--max-resolution", "32"])
    assert result.exit_code == 0, result.output
    assert "3 classes, 9 train and 5 val images" in result.stdout
