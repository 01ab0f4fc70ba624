"""Dataset metadata sidecar: the class list and per-sample labels of a written dataset.

A dataset directory (written by ``dlth-orch data write`` or a builtin preparer) holds::

    meta.json          {"format_version": 1, "name": ..., "classes": [{"index", "wnid", "name"}],
                        "splits": {"train": {"num_samples": N, "file": "train.beton"}, "val": {...}}}
    train_labels.npy   int64 array, label (original class index) of every train sample, in file order
    val_labels.npy     the same for val

Subsets compute their sample indices from these arrays without opening any image.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from specs.atomic import atomic_path, write_json_atomic

FORMAT_VERSION = 1
META_FILE = "meta.json"
SPLITS = ("train", "val")


class DatasetMetaError(ValueError):
    """The dataset directory is missing or its metadata is malformed."""

    def __init__(self, path: str | Path, key: str, expected: str) -> None:
        self.path, self.key, self.expected = str(path), key, expected
        super().__init__(f"{path}: {key}: expected {expected}")


@dataclass(frozen=True)
class ClassInfo:
    """One class of the dataset: its original index, WordNet id and human-readable name."""

    index: int
    wnid: str
    name: str

    def to_dict(self) -> dict:
        return {"index": self.index, "wnid": self.wnid, "name": self.name}


@dataclass
class DatasetMeta:
    """Classes and per-split labels of one dataset directory."""

    root: Path
    name: str
    classes: list[ClassInfo]
    split_files: dict[str, str]
    labels: dict[str, np.ndarray] = field(repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def beton_path(self, split: str) -> Path:
        """Absolute path of the split's ``.beton`` file."""
        return self.root / self.split_files[split]

    def class_by_wnid(self) -> dict[str, ClassInfo]:
        return {c.wnid: c for c in self.classes}

    @property
    def fingerprint(self) -> str:
        """Content hash of the class list and labels (not of the images): part of every job identity."""
        h = hashlib.sha256()
        h.update(json.dumps([c.to_dict() for c in self.classes], sort_keys=True).encode())
        for split in SPLITS:
            h.update(split.encode())
            h.update(np.ascontiguousarray(self.labels[split], dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def load(cls, root: str | Path) -> "DatasetMeta":
        """Read ``meta.json`` and the label arrays of the dataset at ``root``."""
        root = Path(root).resolve()
        meta_path = root / META_FILE
        if not meta_path.is_file():
            raise DatasetMetaError(root, META_FILE, "a dataset directory written by 'dlth-orch data write'")
        try:
            raw = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetMetaError(meta_path, "json", f"valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if raw.get("format_version") != FORMAT_VERSION:
            raise DatasetMetaError(meta_path, "format_version", str(FORMAT_VERSION))
        classes = [ClassInfo(int(c["index"]), str(c["wnid"]), str(c["name"])) for c in raw["classes"]]
        if [c.index for c in classes] != list(range(len(classes))):
            raise DatasetMetaError(meta_path, "classes", "indices 0..k-1 in order")
        labels: dict[str, np.ndarray] = {}
        files: dict[str, str] = {}
        for split in SPLITS:
            info = raw["splits"].get(split)
            if info is None:
                raise DatasetMetaError(meta_path, f"splits.{split}", "an entry for every split (train, val)")
            files[split] = str(info["file"])
            arr = np.load(root / f"{split}_labels.npy")
            if len(arr) != int(info["num_samples"]):
                raise DatasetMetaError(root / f"{split}_labels.npy", "length", f"{info['num_samples']} labels")
            labels[split] = arr.astype(np.int64, copy=False)
        return cls(root=root, name=str(raw.get("name", root.name)), classes=classes, split_files=files, labels=labels)

    def save(self) -> None:
        """Write ``meta.json`` and the label arrays atomically (tmp + rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            with atomic_path(self.root / f"{split}_labels.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.asarray(self.labels[split], dtype=np.int64))
        doc = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "classes": [c.to_dict() for c in self.classes],
            "splits": {
                s: {"num_samples": int(len(self.labels[s])), "file": self.split_files[s]} for s in SPLITS
            },
        }
        write_json_atomic(self.root / META_FILE, doc)
