"""``wordnet``: classes chosen by the WordNet noun hierarchy of their wnids (see :mod:`subsets.hierarchy`).

``mode = "cover"`` (k required): k classes spread over the hierarchy. The classes are grouped by the
synset at ``depth`` on their grouping path (depth 0 is ``entity.n.01``; ImageNet-1K has 14 groups at
depth 4, 33 at 5, 76 at 6 (the default: animal, device, conveyance, ...), 194 at 7). The k picks are
split over the groups (``allocation = "even"``: as equal as possible, a small group is taken whole and
its unused share goes to the others; ``"proportional"``: in proportion to group size, largest
remainder), and inside a group the picks are evenly spaced over its classes in hierarchy order
(sorted by grouping path), so they spread over its subgroups too. Leftover single picks go to the
larger groups first; ``seed`` orders groups of equal size. Everything is deterministic.

``mode = "subtree"``: the classes under any of ``roots`` (synset names such as ``"dog.n.01"`` or
wnids), on any hypernym path; all of them, or, with ``k``, k of them spread as in ``cover``.
"""

from __future__ import annotations

import re
from typing import Any

from subsets.base import OPTIONAL, Strategy, SubsetError, check_class_count
from subsets.hierarchy import Hierarchy, group_coverage, load_hierarchy
from subsets.meta import DatasetMeta
from subsets.spread import ALLOCATIONS, allocate, pick_evenly
from subsets.wordnet_corpus import INSTALL_HINT, WNID_RE

MODES = ("cover", "subtree")
DEFAULT_DEPTH = 6
SYNSET_RE = re.compile(r"^\S+\.n\.\d{2}$")
SPREAD_KEYS = ("depth", "allocation", "seed")


def spread_over_groups(
    hier: Hierarchy, wnids: list[str], k: int, depth: int, allocation: str = "even", seed: int = 0
) -> list[str]:
    """``k`` of ``wnids`` spread over their groups at ``depth`` (see the module doc)."""
    groups: dict[str, list[str]] = {}
    for w in wnids:
        groups.setdefault(hier.group(hier.synset(w), depth), []).append(w)
    for members in groups.values():
        members.sort(key=lambda w: (hier.path(hier.synset(w)), w))
    quota = allocate({g: len(m) for g, m in groups.items()}, k, allocation, seed)
    return [w for g in sorted(groups) for w in pick_evenly(groups[g], quota[g])]


class WordNet(Strategy):
    name = "wordnet"
    params: dict[str, Any] = {
        "mode": "cover", "k": OPTIONAL, "roots": OPTIONAL,
        "depth": DEFAULT_DEPTH, "allocation": "even", "seed": 0,
    }

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode", "cover")
        if mode not in MODES:
            raise SubsetError("mode", f"one of {', '.join(MODES)}")
        if mode == "cover" and "k" not in params:
            raise SubsetError("k", "a value (the number of classes; required by mode 'cover')")
        if mode == "cover" and "roots" in params:
            raise SubsetError("roots", "no roots with mode 'cover' (roots belong to mode 'subtree')")
        if mode == "subtree" and "k" not in params:
            extra = [key for key in SPREAD_KEYS if key in params]
            if extra:
                raise SubsetError(extra[0], "no value unless k is given (it shapes how k classes are spread)")
        out = super().validate(params)
        if "k" in out:
            k = out["k"]
            check_class_count(k)
            depth = out["depth"]
            if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
                raise SubsetError("depth", "a non-negative integer (0 is entity.n.01)")
            if out["allocation"] not in ALLOCATIONS:
                raise SubsetError("allocation", f"one of {', '.join(ALLOCATIONS)}")
            seed = out["seed"]
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise SubsetError("seed", "a non-negative integer")
        else:
            for key in SPREAD_KEYS:
                out.pop(key)
        if mode == "subtree":
            roots = params.get("roots")
            if isinstance(roots, str):
                roots = [roots]
            if (not isinstance(roots, list) or not roots
                    or not all(isinstance(r, str) and (SYNSET_RE.match(r) or WNID_RE.match(r)) for r in roots)):
                raise SubsetError("roots", 'a list of noun synset names or wnids, e.g. ["dog.n.01"] or ["n02084071"]')
            out["roots"] = sorted(set(roots))
        return out

    def _hierarchy(self, meta: DatasetMeta) -> Hierarchy:
        return load_hierarchy([c.wnid for c in meta.classes])

    def _roots(self, hier: Hierarchy, roots: list[str]) -> list[str]:
        out = []
        for spec in roots:
            name = hier.lookup(spec)
            if name is None:
                where = ("does not exist in WordNet 3.0" if hier.reader is not None
                         else f"is not in the shipped ImageNet hierarchy; {INSTALL_HINT} to use any synset")
                raise SubsetError("roots", f"existing noun synsets above the dataset's classes ({spec!r} {where})")
            out.append(name)
        return out

    def _choose(self, params: dict[str, Any], meta: DatasetMeta, hier: Hierarchy) -> list[str]:
        wnids = [c.wnid for c in meta.classes]
        if params["mode"] == "subtree":
            roots = set(self._roots(hier, params["roots"]))
            pool = [w for w in wnids if roots & hier.ancestors(hier.synset(w))]
            if not pool:
                raise SubsetError("roots", f"synsets with classes of the dataset under them (none under "
                                           f"{', '.join(params['roots'])})")
        else:
            pool = wnids
        if "k" not in params:
            return pool
        if params["k"] > len(pool):
            what = "the classes under the roots" if params["mode"] == "subtree" else "the dataset's classes"
            raise SubsetError("k", f"at most {len(pool)} ({what})")
        return spread_over_groups(hier, pool, params["k"], params["depth"], params["allocation"], params["seed"])

    def select_classes(self, params: dict[str, Any], meta: DatasetMeta) -> list[int]:
        index = {c.wnid: c.index for c in meta.classes}
        return [index[w] for w in self._choose(params, meta, self._hierarchy(meta))]

    def describe(self, params: dict[str, Any], meta: DatasetMeta) -> dict[str, Any]:
        hier = self._hierarchy(meta)
        chosen = self._choose(params, meta, hier)
        out = group_coverage(hier, chosen, [c.wnid for c in meta.classes], params.get("depth", DEFAULT_DEPTH))
        if "roots" in params:
            out["roots"] = self._roots(hier, params["roots"])
        return {"wordnet": out}
