"""Access to the WordNet 3.0 corpus through nltk, when it is installed (it is optional).

``scripts/install_wordnet.sh [DIR]`` copies Debian's WordNet files into ``DIR/corpora/wordnet/``
(with the ``lexnames`` file nltk needs). This module looks for that folder under each entry of
``$NLTK_DATA`` (``os.pathsep``-separated), then under ``~/.cache/dlth-orch/nltk_data``, and reads it
with nltk's own reader (registering the directory in ``nltk.data.path``, which nltk requires).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "NLTK_DATA"
INSTALL_HINT = "run scripts/install_wordnet.sh and point NLTK_DATA at the directory it prints"
WORDNET_VERSION = "3.0"
_REQUIRED = ("lexnames", "data.noun", "index.noun")
WNID_RE = re.compile(r"^n\d{8}$")


def default_corpus_dir() -> Path:
    """Where scripts/install_wordnet.sh puts the corpus when neither an argument nor NLTK_DATA is given."""
    return Path.home() / ".cache" / "dlth-orch" / "nltk_data"


def find_corpus() -> Path | None:
    """The first data directory holding ``corpora/wordnet`` (see the module doc), or None."""
    candidates = [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    candidates.append(default_corpus_dir())
    for root in candidates:
        folder = root / "corpora" / "wordnet"
        if all((folder / f).is_file() for f in _REQUIRED):
            return root.resolve()
    return None


@lru_cache(maxsize=4)
def _reader_at(root: str) -> Any:
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class Reader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            # nltk maps a corpus that is not its own "wordnet" download onto WordNet 3.0 through
            # index.sense (about 6 s) for the multilingual OMW data; this corpus *is* 3.0 and OMW is unused.
            return None

    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed here
        reader = Reader(str(Path(root) / "corpora" / "wordnet"), None)
    version = reader.get_version()
    if version != WORDNET_VERSION:
        raise RuntimeError(f"{root}: WordNet {version} found, ImageNet wnids need WordNet {WORDNET_VERSION}")
    log.debug("WordNet %s read from %s", version, root)
    return reader


def wordnet_reader() -> Any | None:
    """nltk's WordNet reader over the installed corpus, or None when no corpus is installed."""
    root = find_corpus()
    return _reader_at(str(root)) if root is not None else None


def wnid_of(synset: Any) -> str:
    """ImageNet-style id of a noun synset: ``n`` + its 8-digit WordNet 3.0 offset."""
    return f"{synset.pos()}{synset.offset():08d}"


def synset_by_wnid(reader: Any, wnid: str) -> Any | None:
    """The noun synset of ``wnid`` (``n01440764`` -> tench.n.01), or None if there is none."""
    if not WNID_RE.match(wnid):
        return None
    from nltk.corpus.reader.wordnet import WordNetError

    try:
        return reader.synset_from_pos_and_offset("n", int(wnid[1:]))
    except (WordNetError, ValueError, KeyError):
        return None


def synset_by_name(reader: Any, name: str) -> Any | None:
    """The noun synset named ``name`` (``dog.n.01``; an alias such as ``domestic_dog.n.01`` works too)."""
    from nltk.corpus.reader.wordnet import WordNetError

    try:
        synset = reader.synset(name)
    except (WordNetError, ValueError, KeyError, AttributeError):
        return None
    return synset if synset.pos() == "n" else None


def hypernyms_of(synset: Any) -> list[Any]:
    """Direct hypernyms and instance hypernyms (the parents ``hypernym_paths()`` follows), unordered."""
    return list(synset.hypernyms()) + list(synset.instance_hypernyms())
