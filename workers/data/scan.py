"""Scan an image-folder tree (``train/<class>/*.JPEG``, ``val/<class>/*.JPEG``) into file lists.

Classes are the class folders of ``train/`` in sorted order (index 0..k-1, like torchvision's
ImageFolder); files are sorted within each class. The scan checks the tree's shape without opening any
image: missing splits, empty class folders, val classes that differ from train, and image entries
that cannot be read (broken links, empty files, folders named like images).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.data.errors import DataWriteError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
EXTENSIONS_TEXT = ".JPEG/.jpg/.jpeg/.png"
SPLITS = ("train", "val")


@dataclass
class SplitFiles:
    """The image files of one split and the class index of each, in file order."""

    paths: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class FolderScan:
    """Result of :func:`scan_image_folder`."""

    root: Path
    classes: list[str]  # class folder names; position = class index
    splits: dict[str, SplitFiles]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), only with skip_bad


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _class_dirs(split_dir: Path) -> list[str]:
    try:
        entries = sorted(e.name for e in os.scandir(split_dir) if e.is_dir(follow_symlinks=True))
    except OSError as exc:
        raise DataWriteError(split_dir, "read", f"a readable folder ({exc.strerror})") from exc
    return [e for e in entries if not e.startswith(".")]


def _image_files(class_dir: Path) -> tuple[list[str], list[str], int]:
    """(readable image paths, unreadable image paths, count of ignored non-image files), sorted."""
    good: list[str] = []
    bad: list[str] = []
    ignored = 0
    for dirpath, dirnames, filenames in sorted(os.walk(class_dir, followlinks=True)):  # like ImageFolder
        for name in sorted(filenames) + [d for d in dirnames if _is_image_name(d)]:
            path = os.path.join(dirpath, name)
            if not _is_image_name(name):
                ignored += 1
                continue
            try:
                st = os.stat(path)
                ok = os.path.isfile(path) and st.st_size > 0 and os.access(path, os.R_OK)
            except OSError:
                ok = False
            (good if ok else bad).append(path)
    return good, bad, ignored


def scan_image_folder(src: str | Path, *, skip_bad: bool = False) -> FolderScan:
    """List the images of ``src/train`` and ``src/val``; raise :class:`DataWriteError` on a bad tree.

    With ``skip_bad`` an unreadable image entry is skipped, an empty train class folder drops the
    class (and its val folder), and an empty val class folder leaves the class without val samples;
    everything skipped is listed in :attr:`FolderScan.skipped`.
    """
    root = Path(src)
    if not root.is_dir():
        raise DataWriteError(root, "source", "an existing folder holding train/ and val/ image folders")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DataWriteError(root / split, split, "a folder of class folders (<split>/<wnid>/*.JPEG)")
    skipped: list[tuple[str, str]] = []
    ignored = 0

    train_classes = _class_dirs(root / "train")
    if not train_classes:
        raise DataWriteError(root / "train", "classes", "at least one class folder (train/<wnid>/)")
    val_classes = _class_dirs(root / "val")
    if set(val_classes) != set(train_classes):
        missing = sorted(set(train_classes) - set(val_classes))
        extra = sorted(set(val_classes) - set(train_classes))
        detail = "; ".join(
            f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for what, names in (("missing in val", missing), ("not in train", extra))
            if names
        )
        raise DataWriteError(root / "val", "classes", f"the same class folders as train/ ({detail})")

    files: dict[str, dict[str, list[str]]] = {}
    for split in SPLITS:
        files[split] = {}
        for cls in train_classes:
            good, bad, n_ignored = _image_files(root / split / cls)
            ignored += n_ignored
            if bad and not skip_bad:
                raise DataWriteError(bad[0], "image", f"a readable, non-empty {EXTENSIONS_TEXT} file")
            skipped.extend((p, "unreadable") for p in bad)
            if not good and (split == "train" or not skip_bad):
                if not skip_bad:
                    raise DataWriteError(root / split / cls, "images", f"at least one {EXTENSIONS_TEXT} image")
                skipped.append((str(root / split / cls), "empty class folder (class dropped)"))
            files[split][cls] = good

    classes = [c for c in train_classes if files["train"][c]]
    for cls in set(train_classes) - set(classes):  # dropped classes: their val images are skipped too
        skipped.extend((p, "class dropped") for p in files["val"][cls])
    if not classes:
        raise DataWriteError(root / "train", "images", f"at least one class folder with {EXTENSIONS_TEXT} images")
    if ignored:
        log.warning("%s: ignored %d files that are not %s images", root, ignored, EXTENSIONS_TEXT)

    splits = {}
    for split in SPLITS:
        paths = [p for cls in classes for p in files[split][cls]]
        labels = np.concatenate(
            [np.full(len(files[split][cls]), i, dtype=np.int64) for i, cls in enumerate(classes)]
        )
        if not paths:
            raise DataWriteError(root / split, "images", f"at least one {EXTENSIONS_TEXT} image in the split")
        splits[split] = SplitFiles(paths=paths, labels=labels)
    return FolderScan(root=root, classes=classes, splits=splits, skipped=skipped)
