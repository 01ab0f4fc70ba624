"""Subset strategies: the base class, the manifest a subset resolves to, and the registry.

A grid's ``[subsets.NAME]`` table is ``{"strategy": <registered name>, **strategy params,
"fraction": float (optional), "fraction_seed": int (optional)}``. :func:`resolve` turns it into a
:class:`Manifest`: the chosen classes and the sample indices per split, with a content hash that
goes into every job identity. The same inputs give the same manifest on any machine.
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


class Strategy(ABC):
    """Chooses classes. Subclasses live one per file and register with :func:`register`."""

    name: ClassVar[str]
    #: parameter name -> default (None means required, OPTIONAL may be absent). Unknown keys are rejected.
    params: ClassVar[dict[str, Any]] = {}
    #: parameters holding file paths: kept in the params (the worker re-reads the file) but left out of
    #: the manifest's content hash, so moving a grid does not change job identities. A strategy that
    #: reads a file puts a hash of its content into the params instead (e.g. ``accuracy_sha``).
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


_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def get_strategy(name: Any) -> Strategy:
    """Instantiate the strategy registered under ``name``."""
    from subsets import registry  # noqa: F401  (imports every strategy module)

    if not isinstance(name, str) or name not in _REGISTRY:
        raise SubsetError("strategy", f"one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def strategy_names() -> list[str]:
    from subsets import registry  # noqa: F401

    return sorted(_REGISTRY)


def identity_params(strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without the strategy's path parameters: the part that defines what a subset is."""
    skip = set(get_strategy(strategy).path_params)
    return {k: v for k, v in params.items() if k not in skip}


@dataclass
class Manifest:
    """What a job sees: the chosen classes and the sample indices of each split."""

    name: str
    strategy: str
    params: dict[str, Any]
    classes: list[ClassInfo]
    indices: dict[str, np.ndarray] = field(repr=False)
    dataset_fingerprint: str

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
            "params": identity_params(self.strategy, self.params),
            "classes": [c.wnid for c in self.classes],
        }
        h.update(json.dumps(head, sort_keys=True, default=str).encode())
        for split in sorted(self.indices):
            h.update(split.encode())
            h.update(np.ascontiguousarray(self.indices[split], dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

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


def validate_table(table: dict[str, Any]) -> dict[str, Any]:
    """Validate a ``[subsets.NAME]`` table without any dataset; return its canonical form."""
    if not isinstance(table, dict):
        raise SubsetError("strategy", "a table with a 'strategy' key")
    strategy = get_strategy(table.get("strategy"))
    own = {k: v for k, v in table.items() if k not in COMMON_KEYS}
    canonical: dict[str, Any] = {"strategy": strategy.name, **strategy.validate(own)}
    fraction = table.get("fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise SubsetError("fraction", "a number in (0, 1]")
    if fraction != 1.0:
        canonical["fraction"] = float(fraction)
        seed = table.get("fraction_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SubsetError("fraction_seed", "a non-negative integer")
        canonical["fraction_seed"] = seed
    return canonical


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


def resolve(name: str, table: dict[str, Any], meta: DatasetMeta) -> Manifest:
    """Resolve a subset table against a dataset into its :class:`Manifest`."""
    canonical = validate_table(table)
    strategy = get_strategy(canonical["strategy"])
    own = {k: v for k, v in canonical.items() if k not in COMMON_KEYS}
    chosen = sorted(set(strategy.select_classes(own, meta)))
    if not chosen:
        raise SubsetError("strategy", f"a subset with at least one class ('{name}' selects none)")
    indices = {}
    for split, labels in meta.labels.items():
        idx = np.flatnonzero(np.isin(labels, chosen)).astype(np.int64)
        if split == "train" and "fraction" in canonical:
            idx = stratified_fraction(labels, idx, canonical["fraction"], canonical["fraction_seed"])
        indices[split] = idx
    return Manifest(
        name=name,
        strategy=strategy.name,
        params={k: v for k, v in canonical.items() if k != "strategy"},
        classes=[meta.classes[i] for i in chosen],
        indices=indices,
        dataset_fingerprint=meta.fingerprint,
    )
