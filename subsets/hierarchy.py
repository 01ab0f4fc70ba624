"""The WordNet noun hierarchy of a dataset's classes: shipped for ImageNet-1K, nltk for the rest.

WordNet's noun hierarchy is a DAG: a synset may have several hypernyms, so a class may have several
hypernym paths to ``entity.n.01`` (304 of ImageNet-1K's classes do; every dog has one through
``domestic_animal.n.01`` and one through ``canine.n.02``). Two uses, two rules:

* membership ("is this class under dog.n.01?") uses *every* path: the class's full ancestor set;
* grouping ("which group at depth d?") uses *one* path per class, :data:`PATH_RULE`: the longest
  hypernym path (the most specific chain); among equally long ones, the first when their synset
  names are compared from ``entity.n.01`` down. (nltk's own ``hypernym_paths()`` order is not a
  usable tie-break: it iterates a set and changes from one process to the next.) For animals this is
  the biological chain (``... mammal > placental > carnivore > canine > dog``), and all 118 dogs
  keep ``dog.n.01`` on it.

Depth counts along that path from ``entity.n.01`` (depth 0); a class whose path is shorter than the
depth is its own group.

``subsets/data/imagenet_hierarchy.json`` (written by ``scripts/build_wordnet_hierarchy.py``) holds
the graph above ImageNet-1K's 1,000 classes, so those need no corpus. Other wnids are read from the
WordNet corpus with nltk when it is installed (:mod:`subsets.wordnet_corpus`); otherwise they are a
clear error.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from specs.atomic import write_text_atomic
from subsets.base import SubsetError
from subsets.wordnet_corpus import (
    INSTALL_HINT,
    WNID_RE,
    hypernyms_of,
    synset_by_name,
    synset_by_wnid,
    wnid_of,
    wordnet_reader,
)

HIERARCHY_FILE = Path(__file__).parent / "data" / "imagenet_hierarchy.json"
FORMAT_VERSION = 1
PATH_RULE = ("the longest hypernym path to entity.n.01; among equally long ones, the first by synset names "
             "compared from entity.n.01 down")
ROOT = "entity.n.01"


@dataclass(frozen=True)
class Node:
    """One noun synset: its wnid and its direct hypernyms (and instance hypernyms), sorted by name."""

    wnid: str
    hypernyms: tuple[str, ...]


class Hierarchy:
    """A hypernym graph keyed by synset name (``dog.n.01``), with the lemmas of its class synsets."""

    def __init__(self, nodes: dict[str, Node], lemmas: dict[str, list[str]], reader: Any = None) -> None:
        self.nodes = dict(nodes)
        self.lemmas = dict(lemmas)  # wnid -> lemma names
        self.by_wnid = {n.wnid: name for name, n in self.nodes.items()}
        self._reader = reader
        self._paths: dict[str, list[tuple[str, ...]]] = {}

    @property
    def reader(self) -> Any | None:
        """nltk's WordNet reader, opened on first use; None when no corpus is installed."""
        if self._reader is None:
            self._reader = wordnet_reader() or False
        return self._reader or None

    # --- building ---------------------------------------------------------------------------
    def add_synset(self, synset: Any) -> str:
        """Add an nltk synset and all its ancestors; return its name."""
        stack = [synset]
        while stack:
            s = stack.pop()
            if s.name() in self.nodes:
                continue
            parents = hypernyms_of(s)
            self.nodes[s.name()] = Node(wnid_of(s), tuple(sorted(p.name() for p in parents)))
            self.by_wnid[wnid_of(s)] = s.name()
            stack.extend(parents)
        self._paths.clear()
        return synset.name()

    # --- queries ----------------------------------------------------------------------------
    def synset(self, wnid: str) -> str:
        """Synset name of a class wnid (it must be in the graph)."""
        return self.by_wnid[wnid]

    def paths(self, name: str) -> list[tuple[str, ...]]:
        """Every hypernym path from ``entity.n.01`` down to ``name`` (those of the first hypernym first)."""
        if name not in self._paths:
            parents = self.nodes[name].hypernyms
            if not parents:
                self._paths[name] = [(name,)]
            else:
                self._paths[name] = [p + (name,) for parent in parents for p in self.paths(parent)]
        return self._paths[name]

    def path(self, name: str) -> tuple[str, ...]:
        """The one path used for grouping (:data:`PATH_RULE`)."""
        return min(self.paths(name), key=lambda p: (-len(p), p))

    def ancestors(self, name: str) -> frozenset[str]:
        """``name`` and every synset above it on any path."""
        return frozenset(s for p in self.paths(name) for s in p)

    def group(self, name: str, depth: int) -> str:
        """The synset at ``depth`` on the grouping path (the class itself if its path is shorter)."""
        p = self.path(name)
        return p[min(depth, len(p) - 1)]

    def lookup(self, spec: str) -> str | None:
        """Synset name for a synset name or a wnid; asks nltk (and adds the synset) when not in the graph."""
        if spec in self.nodes:
            return spec
        if spec in self.by_wnid:
            return self.by_wnid[spec]
        if self.reader is None:
            return None
        synset = synset_by_wnid(self.reader, spec) if WNID_RE.match(spec) else synset_by_name(self.reader, spec)
        return self.add_synset(synset) if synset is not None else None


def group_coverage(hier: Hierarchy, chosen: Iterable[str], universe: Iterable[str], depth: int) -> dict[str, Any]:
    """How the ``chosen`` wnids cover the groups at ``depth`` of the ``universe`` (all the dataset's wnids)."""
    total = Counter(hier.group(hier.synset(w), depth) for w in universe)
    picked = Counter(hier.group(hier.synset(w), depth) for w in chosen)
    groups = [{"group": g, "chosen": picked.get(g, 0), "total": t}
              for g, t in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))]
    return {"depth": depth, "groups_total": len(total), "groups_covered": len(picked), "groups": groups}


# --- the shipped file -------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _shipped() -> tuple[dict[str, Node], dict[str, list[str]]]:
    doc = json.loads(HIERARCHY_FILE.read_text())
    nodes = {name: Node(s["wnid"], tuple(s["hypernyms"])) for name, s in doc["synsets"].items()}
    lemmas = {wnid: list(c["lemmas"]) for wnid, c in doc["classes"].items()}
    return nodes, lemmas


def shipped_wnids() -> list[str]:
    """The class wnids the shipped hierarchy covers (ImageNet-1K)."""
    return sorted(_shipped()[1])


def load_hierarchy(wnids: Iterable[str], key: str = "strategy") -> Hierarchy:
    """The hierarchy above ``wnids``: the shipped graph, plus nltk for wnids it does not know.

    Raises :class:`SubsetError` (under ``key``) for a wnid that is not a WordNet noun synset, or that
    the shipped file does not know while no corpus is installed.
    """
    nodes, lemmas = _shipped()
    wnids = list(wnids)
    missing = [w for w in wnids if w not in lemmas]
    hier = Hierarchy(nodes, lemmas)
    reader = hier.reader if missing else None
    if missing and reader is None:
        raise SubsetError(
            key,
            f"classes with a known WordNet hierarchy: {len(missing)} wnids are not ImageNet-1K classes "
            f"(e.g. {', '.join(missing[:3])}) and no WordNet corpus is installed ({INSTALL_HINT})",
        )
    bad = []
    for w in missing:
        synset = synset_by_wnid(reader, w)
        if synset is None:
            bad.append(w)
            continue
        hier.add_synset(synset)
        hier.lemmas[w] = list(synset.lemma_names())
    if bad:
        raise SubsetError(
            key,
            f"classes whose ids are WordNet 3.0 noun ids (n + 8-digit offset): {len(bad)} are not "
            f"(e.g. {', '.join(bad[:3])})",
        )
    return hier


# --- generating the shipped file (scripts/build_wordnet_hierarchy.py) -------------------------
def build_doc(reader: Any, wnids: Iterable[str]) -> dict[str, Any]:
    """The content of the shipped hierarchy file for ``wnids``, read from the corpus with nltk."""
    hier = Hierarchy({}, {}, reader)
    classes: dict[str, Any] = {}
    for w in sorted(wnids):
        synset = synset_by_wnid(reader, w)
        if synset is None:
            raise ValueError(f"{w} is not a WordNet {reader.get_version()} noun synset")
        name = hier.add_synset(synset)
        classes[w] = {"synset": name, "lemmas": list(synset.lemma_names()), "path": list(hier.path(name))}
    return {
        "format_version": FORMAT_VERSION,
        "wordnet_version": reader.get_version(),
        "generator": "scripts/build_wordnet_hierarchy.py",
        "path_rule": PATH_RULE,
        "classes": classes,
        "synsets": {name: {"wnid": n.wnid, "hypernyms": list(n.hypernyms)} for name, n in sorted(hier.nodes.items())},
    }


def dump_doc(doc: dict[str, Any]) -> str:
    """Deterministic text of a hierarchy doc: one class / synset per line (readable diffs)."""
    lines = ["{"]
    scalars = [k for k in doc if not isinstance(doc[k], dict)]
    for k in scalars:
        lines.append(f" {json.dumps(k)}: {json.dumps(doc[k])},")
    sections = [k for k in doc if isinstance(doc[k], dict)]
    for i, k in enumerate(sections):
        body = ",\n".join(f"  {json.dumps(n)}: {json.dumps(v, ensure_ascii=False)}" for n, v in doc[k].items())
        lines.append(f" {json.dumps(k)}: {{\n{body}\n }}" + ("," if i < len(sections) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_doc(doc: dict[str, Any], path: Path = HIERARCHY_FILE) -> Path:
    """Write a hierarchy doc atomically (tmp + rename)."""
    return write_text_atomic(path, dump_doc(doc))
