#!/usr/bin/env python3
"""Generate subsets/data/imagenet_hierarchy.json from the WordNet 3.0 corpus (nltk).

    scripts/install_wordnet.sh                 # once: the corpus (prints its directory)
    NLTK_DATA=<dir> .venv/bin/python scripts/build_wordnet_hierarchy.py [--out PATH] [--check]

For each of ImageNet-1K's 1,000 classes (wnids from timm's offline ImageNetInfo) the file holds the
synset name, its lemma names and its grouping path (subsets.hierarchy.PATH_RULE), and for every synset
above them its wnid and direct hypernyms, so the WordNet strategy gives the same answer without the
corpus. ``--check`` writes nothing and exits 1 if the file differs from what the corpus gives.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402

from subsets.hierarchy import HIERARCHY_FILE, build_doc, dump_doc, write_doc  # noqa: E402
from subsets.wordnet_corpus import INSTALL_HINT, find_corpus, wordnet_reader  # noqa: E402


def imagenet1k_wnids() -> list[str]:
    """ImageNet-1K's wnids from timm's offline tables."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HIERARCHY_FILE, help="output file (default: the shipped one)")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    with console.status("reading WordNet and ImageNet-1K's classes"):
        reader = wordnet_reader()
        if reader is None:
            console.print(f"error: no WordNet corpus found: {INSTALL_HINT}")
            return 2
        wnids = imagenet1k_wnids()
        doc = build_doc(reader, wnids)
    console.print(f"WordNet {doc['wordnet_version']} at {find_corpus()}: {len(doc['classes'])} classes, "
                  f"{len(doc['synsets'])} synsets")
    if args.check:
        same = args.out.is_file() and args.out.read_text() == dump_doc(doc)
        console.print(f"{args.out}: {'up to date' if same else 'DIFFERS from the corpus'}")
        return 0 if same else 1
    write_doc(doc, args.out)
    console.print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
