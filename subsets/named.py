"""``named``: an explicit list of classes the user brings (or a list shipped with dlth-orch).

Exactly one of:

* ``wnids_file = "path"``: a text file, one class id (wnid) per line; ``#`` starts a comment, blank
  lines are ignored and only the first whitespace-separated token of a line counts (so
  ``n01440764 tench`` works too). The hash of the parsed list enters the canonical params as
  ``wnids_sha``, so editing the file changes the subset's identity.
* ``list = "imagenet100"``: a list shipped in ``subsets/data/<name>.txt`` (``imagenet100``: the
  ImageNet-100 of the CMC paper).
* ``wnids = ["n01440764", ...]``: the list inline.

Every listed wnid must be a class of the dataset; the order of the list does not matter (a subset's
classes are always in the dataset's class order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specs.base import stable_hash
from subsets.base import OPTIONAL, Strategy, SubsetError
from subsets.meta import DatasetMeta

DATA_DIR = Path(__file__).parent / "data"
SOURCES = ("wnids_file", "list", "wnids")


def builtin_lists() -> list[str]:
    """Names of the class lists shipped in ``subsets/data``."""
    return sorted(p.stem for p in DATA_DIR.glob("*.txt"))


def read_wnids_file(path: str | Path, key: str = "wnids_file") -> list[str]:
    """Class ids listed in a wnids file (see the module doc); :class:`SubsetError` if missing or bad."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SubsetError(key, f"an existing file of wnids, one per line ({path})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SubsetError(key, f"a readable text file of wnids ({path}: {exc.__class__.__name__})") from None
    out: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        if tokens[0] in seen:
            raise SubsetError(key, f"each wnid once ({path}: {tokens[0]} on lines {seen[tokens[0]]} and {lineno})")
        seen[tokens[0]] = lineno
        out.append(tokens[0])
    if not out:
        raise SubsetError(key, f"at least one wnid ({path} lists none)")
    return out


class Named(Strategy):
    name = "named"
    params: dict[str, Any] = {"wnids_file": OPTIONAL, "list": OPTIONAL, "wnids": OPTIONAL, "wnids_sha": OPTIONAL}
    path_params = ("wnids_file",)

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        out = super().validate(params)
        given = [k for k in SOURCES if k in out]
        if len(given) != 1:
            raise SubsetError(
                given[1] if len(given) > 1 else "wnids_file",
                "exactly one of wnids_file (a path), list (a shipped list) or wnids (an inline list)",
            )
        if "wnids" in out:
            wnids = out["wnids"]
            if not isinstance(wnids, list) or not wnids or not all(isinstance(w, str) and w for w in wnids):
                raise SubsetError("wnids", "a non-empty list of class ids (wnids)")
            if len(set(wnids)) != len(wnids):
                raise SubsetError("wnids", "each wnid once")
            out["wnids"] = sorted(wnids)
            out.pop("wnids_sha", None)
            return out
        wnids = self._read(out)
        sha = stable_hash(sorted(wnids))
        if out.get("wnids_sha") not in (None, sha):
            source = out.get("wnids_file") or out.get("list")
            raise SubsetError(
                "wnids_sha",
                f"{out['wnids_sha']} (the content hash of {source} when the grid was launched); the list "
                f"changed since and now hashes to {sha}",
            )
        out["wnids_sha"] = sha
        return out

    @staticmethod
    def _read(params: dict[str, Any]) -> list[str]:
        if "wnids" in params:
            return list(params["wnids"])
        if "list" in params:
            name = params["list"]
            if name not in builtin_lists():
                raise SubsetError("list", f"the name of a shipped list: one of {', '.join(builtin_lists())}")
            return read_wnids_file(DATA_DIR / f"{name}.txt", "list")
        path = params["wnids_file"]
        if not isinstance(path, str) or not path:
            raise SubsetError("wnids_file", "the path of a file of wnids, one per line")
        return read_wnids_file(path)

    def select_classes(self, params: dict[str, Any], meta: DatasetMeta) -> list[int]:
        wnids = self._read(params)
        index = {c.wnid: c.index for c in meta.classes}
        unknown = [w for w in wnids if w not in index]
        if unknown:
            key = next(k for k in SOURCES if k in params)
            raise SubsetError(
                key,
                f"classes of the dataset {meta.name!r} ({len(unknown)} unknown: {', '.join(unknown[:5])}"
                f"{', ...' if len(unknown) > 5 else ''})",
            )
        return [index[w] for w in wnids]
