"""``dlth-orch data write``: convert an image-folder tree (train/ and val/) into a dataset directory.

The dataset directory holds ``train.beton`` and ``val.beton`` (FFCV; an ``image`` RGB field and an
``label`` int field) and the sidecar of :class:`subsets.meta.DatasetMeta` (``meta.json`` and the
per-sample label arrays). Files are written under temporary names in the output folder and renamed at
the end, ``meta.json`` last: a folder without ``meta.json`` is never mistaken for a dataset, and a
rerun after an interruption starts over cleanly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specs.atomic import write_text_atomic
from specs.procs import pid_alive
from subsets.meta import META_FILE, ClassInfo, DatasetMeta
from workers.data.beton import ImageOptions, ImageSource, write_beton
from workers.data.errors import DataWriteError
from workers.data.imagenet import class_name
from workers.data.scan import EXTENSIONS_TEXT, SPLITS, scan_image_folder

log = logging.getLogger(__name__)

WRITE_MODES = ("raw", "jpg", "proportion")
MIN_PAGE_SIZE = 2**21
MAX_PAGE_SIZE = 2**32
SKIPPED_FILE = "skipped.txt"

__all__ = ["DataWriteError", "ImageOptions", "default_num_workers", "write_image_folder", "write_dataset"]


def default_num_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0))


def load_rgb(path: str, max_resolution: int | None = None) -> np.ndarray:
    """Decode an image file to H x W x 3 uint8 RGB (JPEGs are DCT-downscaled towards ``max_resolution``)."""
    from PIL import Image

    with Image.open(path) as im:
        if max_resolution and im.format == "JPEG":
            im.draft("RGB", (max_resolution, max_resolution))  # keeps both sides >= max_resolution
        return np.asarray(im.convert("RGB"))


@dataclass
class FolderSource:
    """An :class:`~workers.data.beton.ImageSource` over image files."""

    paths: list[str]
    labels: np.ndarray
    max_resolution: int | None

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, i: int) -> np.ndarray:
        return load_rgb(self.paths[i], self.max_resolution)


def check_options(out: Path, options: ImageOptions, page_size: int, num_workers: int) -> None:
    """Raise :class:`DataWriteError` (naming the option) for writer options FFCV would reject or choke on."""
    if options.write_mode not in WRITE_MODES:
        raise DataWriteError(out, "write_mode", f"one of {', '.join(WRITE_MODES)}")
    res = options.max_resolution
    if res is not None and (isinstance(res, bool) or not isinstance(res, int) or res < 8):
        raise DataWriteError(out, "max_resolution", "an integer >= 8 (pixels of the longer side)")
    if not 1 <= options.jpeg_quality <= 100:
        raise DataWriteError(out, "jpeg_quality", "an integer in 1..100")
    if not 0.0 <= options.compress_probability <= 1.0:
        raise DataWriteError(out, "compress_probability", "a number in [0, 1]")
    if page_size < MIN_PAGE_SIZE or page_size >= MAX_PAGE_SIZE or page_size & (page_size - 1):
        raise DataWriteError(out, "page_size", f"a power of two from {MIN_PAGE_SIZE} (2 MiB) below 4 GiB")
    if options.write_mode != "jpg" and (res is None or res * res * 3 > page_size):
        need = f"room for one raw image (max_resolution^2 x 3 bytes) with write_mode {options.write_mode}"
        raise DataWriteError(out, "page_size", need)
    if num_workers < 1:
        raise DataWriteError(out, "num_workers", "an integer >= 1")


def _first_error(source: ImageSource, index: int) -> DataWriteError:
    path = source.paths[index]
    try:
        source.load_image(index)
        reason = "it failed once while writing"
    except Exception as exc:  # noqa: BLE001
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return DataWriteError(path, "image", f"a decodable {EXTENSIONS_TEXT} image ({reason})")


def _write_split(
    tmp: Path, source: ImageSource, options: ImageOptions, *, page_size: int, num_workers: int,
    skip_bad: bool, progress: bool, label: str,
) -> np.ndarray:
    """Write one split to ``tmp``; return the source indices written (all but skipped bad images)."""
    kw = dict(page_size=page_size, num_workers=num_workers, progress=progress, label=label)
    bad = write_beton(tmp, source, options, fail_fast=not skip_bad, **kw)
    keep = np.arange(len(source))
    if len(bad) == 0:
        return keep
    if not skip_bad:
        raise _first_error(source, int(bad[0]))
    keep = np.setdiff1d(keep, bad)
    if len(keep) == 0:
        raise DataWriteError(Path(source.paths[0]).parent.parent, "images", "at least one decodable image")
    log.warning("%s: %d images could not be decoded; writing the split again without them", label, len(bad))
    again = write_beton(tmp, source, options, indices=keep, fail_fast=True, **kw)
    if len(again):
        raise _first_error(source, int(again[0]))
    for i in bad:
        log.info("skipped undecodable image %s", source.paths[i])
    return keep


def write_dataset(
    out: str | Path,
    classes: list[ClassInfo],
    sources: dict[str, ImageSource],
    options: ImageOptions,
    *,
    page_size: int = 4 * 2**20,
    num_workers: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    name: str | None = None,
) -> tuple[DatasetMeta, list[str]]:
    """Write both splits of ``sources`` and the metadata sidecar into ``out``; return (meta, skipped paths).

    Any :class:`~workers.data.beton.ImageSource` works as a source (``paths`` is only used in messages).
    """
    out = Path(out)
    workers = default_num_workers() if num_workers is None else num_workers
    check_options(out, options, page_size, workers)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)  # from here on the folder is not a dataset until the end
    _remove_stale_partials(out)
    tmps = {s: out / f".{s}.beton.partial-{os.getpid()}" for s in SPLITS}
    labels: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    try:
        for split in SPLITS:
            src = sources[split]
            keep = _write_split(tmps[split], src, options, page_size=page_size, num_workers=workers,
                                skip_bad=skip_bad, progress=progress, label=f"{split}.beton")
            labels[split] = np.asarray(src.labels, dtype=np.int64)[keep]
            skipped.extend(src.paths[i] for i in np.setdiff1d(np.arange(len(src)), keep))
        for split in SPLITS:
            os.replace(tmps[split], out / f"{split}.beton")
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    meta = DatasetMeta(
        root=out.resolve(),
        name=name or out.resolve().name,
        classes=classes,
        split_files={s: f"{s}.beton" for s in SPLITS},
        labels=labels,
    )
    meta.save()
    return meta, skipped


def _remove_stale_partials(out: Path) -> None:
    """Delete temporary files left by interrupted writes (whose writer process is gone)."""
    for tmp in out.glob(".*.beton.partial-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not pid_alive(int(pid)):
            log.info("removing %s (left by an interrupted write)", tmp)
            tmp.unlink(missing_ok=True)


def _write_skipped_list(out: Path, entries: Sequence[tuple[str, str]]) -> None:
    target = out / SKIPPED_FILE
    if not entries:
        target.unlink(missing_ok=True)
        return
    write_text_atomic(target, "".join(f"{reason}\t{path}\n" for path, reason in entries))


def write_image_folder(
    src: str | Path,
    out: str | Path,
    *,
    max_resolution: int = 256,
    jpeg_quality: int = 90,
    write_mode: str = "jpg",
    compress_probability: float = 0.5,
    page_size: int = 4 * 2**20,
    num_workers: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    name: str | None = None,
) -> DatasetMeta:
    """Convert ``src/train`` and ``src/val`` (``<wnid>/*.JPEG`` class folders) into a dataset in ``out``.

    Class ``i`` is the i-th class folder in sorted order; its name comes from timm's ImageNet table
    when the folder is a real wnid, else it is the folder name. Bad input raises
    :class:`DataWriteError`; with ``skip_bad`` bad images and empty class folders are skipped instead
    (listed in ``out/skipped.txt``). An existing dataset in ``out`` is replaced only with ``overwrite``.
    """
    out = Path(out)
    options = ImageOptions(max_resolution, jpeg_quality, write_mode, compress_probability)
    check_options(out, options, page_size, default_num_workers() if num_workers is None else num_workers)
    if (out / META_FILE).exists() and not overwrite:
        raise DataWriteError(out / META_FILE, "output", "a folder without a dataset (pass --overwrite to replace it)")
    scan = scan_image_folder(src, skip_bad=skip_bad)
    classes = [ClassInfo(i, wnid, class_name(wnid)) for i, wnid in enumerate(scan.classes)]
    sources = {
        s: FolderSource(scan.splits[s].paths, scan.splits[s].labels, max_resolution) for s in SPLITS
    }
    meta, bad_images = write_dataset(
        out, classes, sources, options, page_size=page_size, num_workers=num_workers,
        skip_bad=skip_bad, progress=progress, name=name,
    )
    skipped = scan.skipped + [(p, "undecodable") for p in bad_images]
    _write_skipped_list(out, skipped)
    if skipped:
        log.warning("skipped %d entries (listed in %s)", len(skipped), out / SKIPPED_FILE)
    log.info(
        "wrote %s: %d classes, %d train / %d val images",
        out, meta.num_classes, len(meta.labels["train"]), len(meta.labels["val"]),
    )
    return meta
