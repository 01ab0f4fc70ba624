"""The backbone pre-flight's memory: which (backbone, image size, patch size, timm version) built and gave
feature vectors of what width, kept in ``<workspace>/cache/backbones.json`` so that a relaunch neither
imports timm nor builds a model it has checked before.

The file is ours but may be edited or damaged, so nothing in it is trusted blindly: it is JSON of a known
shape, and an entry counts only if its fields are of the right types and repeat its key; anything else
is ignored (and replaced on the next write). Only successful checks are remembered (a refused backbone
is checked again, so a fixed environment is seen at once). Writes are atomic (temporary file + rename);
two launchers writing at once lose at most an entry, which is checked again next time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from db import workspace_dir
from specs.atomic import write_json_atomic

log = logging.getLogger(__name__)
CACHE_FILE = Path("cache") / "backbones.json"
SCHEMA = 1


def timm_version() -> str:
    """The installed timm's version, read from its package metadata (without importing timm)."""
    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:
        return "none"


@dataclass(frozen=True)
class BackboneKey:
    """What a backbone check depends on."""

    backbone: str
    image_size: int
    patch_size: int
    timm: str

    @property
    def id(self) -> str:
        """The entry's name in the cache file."""
        return f"{self.backbone}|{self.image_size}|{self.patch_size}|timm {self.timm}"


def _valid_entry(name: str, entry: Any) -> tuple[BackboneKey, int] | None:
    """The entry's key and feature width if it is well formed and repeats its name; else ``None``."""
    if not isinstance(entry, dict) or set(entry) != {"backbone", "image_size", "patch_size", "timm", "num_features"}:
        return None
    ints = (entry["image_size"], entry["patch_size"], entry["num_features"])
    if not all(type(v) is int for v in ints) or not isinstance(entry["backbone"], str) \
            or not isinstance(entry["timm"], str):
        return None
    key = BackboneKey(entry["backbone"], entry["image_size"], entry["patch_size"], entry["timm"])
    if key.id != name or key.image_size <= 0 or key.patch_size < 0 or entry["num_features"] <= 0:
        return None
    return key, int(entry["num_features"])


class BackboneCache:
    """Checked backbones and their feature widths (see the module docstring)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path, self.read_only = path, read_only
        self._entries: dict[BackboneKey, int] = {}
        self._load()

    @classmethod
    def in_workspace(cls, root: Path | None = None, *, read_only: bool = False) -> BackboneCache:
        """The cache of the workspace ``root`` (default: the current workspace); ``read_only``: remember new
        checks in memory only (a dry run writes nothing)."""
        return cls((root or workspace_dir()) / CACHE_FILE, read_only=read_only)

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:  # unreadable or not JSON: as if empty
            log.warning("%s: ignored (%s); backbones are checked again", self.path, type(exc).__name__)
            return
        entries = doc.get("entries") if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None
        if not isinstance(entries, dict):
            log.warning("%s: ignored (expected {\"schema\": %d, \"entries\": {...}}); backbones are checked again",
                        self.path, SCHEMA)
            return
        for name, entry in entries.items():
            valid = _valid_entry(name, entry)
            if valid is None:
                log.warning("%s: entry %r ignored (malformed); that backbone is checked again", self.path, name)
            else:
                self._entries[valid[0]] = valid[1]

    def get(self, key: BackboneKey) -> int | None:
        """The feature width remembered for ``key`` (``None``: not checked yet)."""
        return self._entries.get(key)

    def put(self, key: BackboneKey, num_features: int) -> None:
        """Remember a successful check; the file is rewritten atomically (unless ``read_only``). A workspace
        that cannot be written only costs the next launch the check (logged, never raised)."""
        self._entries[key] = int(num_features)
        if self.read_only:
            return
        doc = {"schema": SCHEMA, "entries": {k.id: {**asdict(k), "num_features": width}
                                             for k, width in sorted(self._entries.items(), key=lambda kv: kv[0].id)}}
        try:
            write_json_atomic(self.path, doc)
        except OSError as exc:
            log.warning("%s: not written (%s); the backbone check runs again next time", self.path, exc)

