"""Subset strategies' base: the :class:`Strategy` class, the :class:`Manifest` a subset resolves to, and
the helpers strategies share. Strategies import only this module (and helpers); :mod:`subsets.registry`
imports the strategies and owns the lookup; :mod:`subsets.resolve` turns a table into a manifest.

A grid's ``[subsets.NAME]`` table is ``{"strategy": <registered name>, **strategy params,
"fraction": float (optional), "fraction_seed": int (optional)}``. :func:`subsets.resolve.resolve` turns
it into a :class:`Manifest`: the chosen classes and the sample indices per split, with a content hash
that goes into every job identity. The same inputs give the same manifest on any machine. The launch
writes the manifest into every job directory (:meth:`Manifest.to_json`), so workers never re-run a
strategy.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from subsets.meta import ClassInfo, DatasetMeta

# Keys every subset table may carry, handled here rather than by a strategy.
COMMON_KEYS = {"strategy", "fraction", "fraction_seed"}


class _Optional:
    """Marker default of a parameter that may be left out (and is then absent from the canonical params)."""

    def __repr__(self) -> str:
        return "OPTIONAL"


#: ``params`` default meaning "optional, no default": absent keys stay absent.
OPTIONAL: Any = _Optional()


class SubsetError(ValueError):
    """A subset table is invalid: names the key and what was expected."""

    def __init__(self, key: str, expected: str) -> None:
        self.key, self.expected = key, expected
        super().__init__(f"{key}: expected {expected}")


class ManifestError(ValueError):
    """A saved manifest file cannot be used (unreadable, malformed, or its content does not match its hash)."""


class Strategy(ABC):
    """Chooses classes. Subclasses live one per file, listed in :mod:`subsets.registry`."""

    name: ClassVar[str]
    #: parameter name -> default (None means required, OPTIONAL may be absent). Unknown keys are rejected.
    params: ClassVar[dict[str, Any]] = {}
    #: parameters holding file paths: kept in the params (``subsets show`` and a relaunch re-read the file)
    #: but left out of the manifest's content hash, so moving a grid does not change job identities. A
    #: strategy that reads a file puts a hash of its content into the params instead (``accuracy_sha``).
    path_params: ClassVar[tuple[str, ...]] = ()

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Check the strategy's own parameters; return them with defaults filled in."""
        unknown = set(params) - set(self.params)
        if unknown:
            key = sorted(unknown)[0]
            allowed = ", ".join(sorted(set(self.params) | COMMON_KEYS))
            raise SubsetError(key, f"one of the keys of strategy '{self.name}' ({allowed})")
        out = {}
        for key, default in self.params.items():
            if key not in params and default is None:
                raise SubsetError(key, f"a value (required by strategy '{self.name}')")
            if key in params or default is not OPTIONAL:
                out[key] = params.get(key, default)
        return out

    @abstractmethod
    def select_classes(self, params: dict[str, Any], meta: DatasetMeta) -> list[int]:
        """Original class indices chosen by this strategy (``params`` already validated)."""

    def describe(self, params: dict[str, Any], meta: DatasetMeta) -> dict[str, Any]:
        """Extra, strategy-specific facts for ``subsets show`` (e.g. WordNet group coverage)."""
        return {}


def check_class_count(k: Any) -> int:
    """``k`` (a number of classes) must be a positive integer."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SubsetError("k", "a positive integer number of classes")
    return k


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise SubsetError(key, f"one of {', '.join(choices)}")
    return value


MANIFEST_FORMAT = 1


@dataclass
class Manifest:
    """What a job sees: the chosen classes and the sample indices of each split.

    ``identity`` is the part of ``params`` that defines the subset (the strategy's path parameters left
    out, see :attr:`Strategy.path_params`); ``None`` means all of ``params``. It enters the content hash,
    so hashing a manifest needs no strategy lookup.
    """

    name: str
    strategy: str
    params: dict[str, Any]
    classes: list[ClassInfo]
    indices: dict[str, np.ndarray] = field(repr=False)
    dataset_fingerprint: str
    identity: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def label_map(self, total_classes: int) -> np.ndarray:
        """Array mapping original class index -> 0..k-1 in this subset (-1 for classes left out)."""
        out = np.full(total_classes, -1, dtype=np.int64)
        for new, c in enumerate(self.classes):
            out[c.index] = new
        return out

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        head = {
            "dataset": self.dataset_fingerprint,
            "strategy": self.strategy,
            "params": self.params if self.identity is None else self.identity,
            "classes": [c.wnid for c in self.classes],
        }
        h.update(json.dumps(head, sort_keys=True, default=str).encode())
        for split in sorted(self.indices):
            h.update(split.encode())
            h.update(np.ascontiguousarray(self.indices[split], dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def to_json(self) -> str:
        """The manifest file's text (``manifest.json`` of a job directory, see :mod:`specs.contract`)."""
        doc = {
            "format_version": MANIFEST_FORMAT,
            "name": self.name,
            "strategy": self.strategy,
            "params": self.params,
            "identity": self.identity,
            "dataset_fingerprint": self.dataset_fingerprint,
            "content_hash": self.content_hash,
            "classes": [c.to_dict() for c in self.classes],
            "indices": {s: np.asarray(v, dtype=np.int64).tolist() for s, v in sorted(self.indices.items())},
        }
        return json.dumps(doc, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> Manifest:
        """Parse :meth:`to_json`'s text; :class:`ManifestError` (naming ``where`` and the key) if it is
        malformed or its content does not hash to its recorded ``content_hash``."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where}: expected valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(doc, dict) or doc.get("format_version") != MANIFEST_FORMAT:
            raise ManifestError(f"{where}: format_version: expected {MANIFEST_FORMAT}")
        try:
            manifest = cls(
                name=str(doc["name"]), strategy=str(doc["strategy"]), params=dict(doc["params"]),
                classes=[ClassInfo(int(c["index"]), str(c["wnid"]), str(c["name"])) for c in doc["classes"]],
                indices={str(s): np.asarray(v, dtype=np.int64) for s, v in doc["indices"].items()},
                dataset_fingerprint=str(doc["dataset_fingerprint"]),
                identity=None if doc.get("identity") is None else dict(doc["identity"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{where}: {exc}: expected a manifest written by Manifest.to_json") from None
        if manifest.content_hash != doc.get("content_hash"):
            raise ManifestError(f"{where}: content_hash: expected {manifest.content_hash} (the hash of its "
                                f"content), found {doc.get('content_hash')}: the file was altered")
        return manifest

    def summary(self, meta: DatasetMeta | None = None) -> dict[str, Any]:
        """JSON-ready description (no per-sample indices)."""
        out: dict[str, Any] = {
            "name": self.name,
            "strategy": self.strategy,
            "params": self.params,
            "num_classes": self.num_classes,
            "num_samples": {s: int(len(v)) for s, v in self.indices.items()},
            "hash": self.content_hash,
            "classes": [c.to_dict() for c in self.classes],
        }
        if meta is not None:
            out["fraction_of_full"] = {
                s: round(len(v) / max(1, len(meta.labels[s])), 6) for s, v in self.indices.items()
            }
        return out


def stratified_fraction(labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Keep ``fraction`` of each class's samples among ``indices`` (at least one per class), seeded.

    Each class draws from its own generator, seeded by ``(seed, class index)``, and keeps a prefix of
    one random permutation of its samples. So a class keeps the same samples whichever other classes
    a subset holds, and a smaller fraction keeps a subset of a larger one's samples (same seed).
    """
    keep = []
    present = labels[indices]
    for cls in np.unique(present):
        members = indices[present == cls]
        n = max(1, int(np.floor(fraction * len(members) + 0.5)))
        order = np.random.default_rng([int(seed), int(cls)]).permutation(len(members))
        keep.append(members[order[:n]])
    return np.sort(np.concatenate(keep)).astype(np.int64) if keep else indices[:0]
