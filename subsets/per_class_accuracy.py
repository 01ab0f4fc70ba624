"""``per_class_accuracy``: classes ranked by a strong supervised model's per-class accuracy.

``mode = "easiest"`` takes the k classes of highest accuracy, ``"hardest"`` the k of lowest, and
``"spread"`` k classes evenly spaced over the whole ranking (always including the hardest and the
easiest class when k >= 2). Ties are broken by wnid (ascending) in every mode, so the choice is
deterministic. ``accuracy_file`` names a CSV (``wnid,accuracy``) or JSON (``{wnid: accuracy}``) file
(see :mod:`subsets.accuracy_file`); every class of the dataset needs an accuracy (extra wnids are
ignored). The hash of the file's parsed content enters the canonical params as ``accuracy_sha``: editing
the file changes the subset's identity (a relaunch records new jobs); a job launched before the edit keeps
the classes it was launched with (the manifest saved in its job directory; workers never read the file).
"""

from __future__ import annotations

import logging
from typing import Any

from subsets.accuracy_file import KEY, accuracy_sha, read_accuracy_file
from subsets.base import OPTIONAL, Strategy, SubsetError, check_choice, check_class_count
from subsets.meta import DatasetMeta
from subsets.spread import pick_evenly

log = logging.getLogger(__name__)
MODES = ("easiest", "hardest", "spread")


def rank_by_accuracy(acc: dict[str, float], wnids: list[str]) -> list[str]:
    """``wnids`` from hardest to easiest: ascending accuracy, ties by ascending wnid."""
    return sorted(wnids, key=lambda w: (acc[w], w))


class PerClassAccuracy(Strategy):
    name = "per_class_accuracy"
    params: dict[str, Any] = {"accuracy_file": None, "k": None, "mode": None, "accuracy_sha": OPTIONAL}
    path_params = (KEY,)

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        out = super().validate(params)
        check_class_count(out["k"])
        check_choice("mode", out["mode"], MODES)
        if not isinstance(out[KEY], str) or not out[KEY]:
            raise SubsetError(KEY, "the path of a per-class accuracy file (CSV wnid,accuracy or JSON)")
        sha = accuracy_sha(read_accuracy_file(out[KEY]))
        given = out.get("accuracy_sha")
        if given is not None and given != sha:
            raise SubsetError(
                "accuracy_sha",
                f"{given} (the content hash of {out[KEY]} when the grid was launched); the file changed "
                f"since and now hashes to {sha}",
            )
        out["accuracy_sha"] = sha
        return out

    def select_classes(self, params: dict[str, Any], meta: DatasetMeta) -> list[int]:
        acc = read_accuracy_file(params[KEY])
        wnids = [c.wnid for c in meta.classes]
        missing = [w for w in wnids if w not in acc]
        if missing:
            raise SubsetError(
                KEY,
                f"an accuracy for every class of the dataset ({params[KEY]} lacks {len(missing)}, "
                f"e.g. {', '.join(missing[:3])})",
            )
        extra = len(acc) - len(wnids)
        if extra:
            log.info("%s: %d wnids are not classes of the dataset; ignored", params[KEY], extra)
        k, n = params["k"], len(wnids)
        if k > n:
            raise SubsetError("k", f"at most {n} (the dataset's number of classes)")
        ranked = rank_by_accuracy(acc, wnids)
        if params["mode"] == "hardest":
            chosen = ranked[:k]
        elif params["mode"] == "easiest":
            chosen = sorted(wnids, key=lambda w: (-acc[w], w))[:k]
        else:
            chosen = pick_evenly(ranked, k, endpoints=True)
        index = {c.wnid: c.index for c in meta.classes}
        return [index[w] for w in chosen]

    def describe(self, params: dict[str, Any], meta: DatasetMeta) -> dict[str, Any]:
        acc = read_accuracy_file(params[KEY])
        chosen = [acc[meta.classes[i].wnid] for i in self.select_classes(params, meta)]
        return {"accuracy": {"min": min(chosen), "max": max(chosen), "mean": sum(chosen) / len(chosen)}}
