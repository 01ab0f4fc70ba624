"""WordNet subsets on the real ImageNet-1K class list (timm's offline tables) and hierarchy.

The dataset is built in memory: the 1,000 real classes with a few fake samples each (subsets never
open an image). Tests marked by the ``corpus`` fixture read WordNet 3.0 with nltk, installed by
scripts/install_wordnet.sh (Debian's wordnet-base + wordnet-sense-index); under CI=true they must
run, elsewhere they skip when the corpus cannot be installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from db.testing import in_ci
from subsets import ClassInfo, DatasetMeta, SubsetError, resolve, validate_table
from subsets.hierarchy import (
    HIERARCHY_FILE,
    PATH_RULE,
    build_doc,
    dump_doc,
    group_coverage,
    load_hierarchy,
    shipped_wnids,
)
from subsets.registry import get_strategy
from subsets.wordnet_corpus import synset_by_wnid, wordnet_reader

REPO = Path(__file__).resolve().parents[1]
DOG_FIRST, DOG_LAST = 151, 268  # ImageNet-1K's dog classes: indices 151..268 (Chihuahua .. Mexican hairless)


def imagenet_classes() -> list[ClassInfo]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    return [ClassInfo(i, w, info.index_to_description(i).split(",")[0])
            for i, w in enumerate(info.label_names())]


def meta_of(classes: list[ClassInfo], train: int = 4, val: int = 2) -> DatasetMeta:
    n = len(classes)
    return DatasetMeta(Path("/nonexistent"), "imagenet-1k", classes, {"train": "train.beton", "val": "val.beton"},
                       {"train": np.tile(np.arange(n), train).astype(np.int64),
                        "val": np.repeat(np.arange(n), val).astype(np.int64)})


@pytest.fixture(scope="module")
def meta() -> DatasetMeta:
    return meta_of(imagenet_classes())


@pytest.fixture(scope="module")
def corpus_dir() -> str:
    """Install (idempotently) the WordNet corpus for nltk; its data directory."""
    proc = subprocess.run(["bash", str(REPO / "scripts/install_wordnet.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        if in_ci():
            pytest.fail(f"scripts/install_wordnet.sh failed under CI: {proc.stderr[-2000:]}")
        pytest.skip(f"WordNet corpus not installable here: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def corpus(corpus_dir, monkeypatch):
    """nltk's WordNet reader over the installed corpus (NLTK_DATA points at it for the test)."""
    monkeypatch.setenv("NLTK_DATA", corpus_dir)
    reader = wordnet_reader()
    assert reader is not None and reader.get_version() == "3.0"
    return reader


@pytest.fixture
def no_corpus(tmp_path, monkeypatch):
    """No WordNet corpus anywhere: NLTK_DATA and HOME point at empty directories."""
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert wordnet_reader() is None


def chosen(manifest) -> list[str]:
    return [c.wnid for c in manifest.classes]


# --- subtree -----------------------------------------------------------------------------------
def test_dog_subtree_is_imagenets_118_dogs(meta, no_corpus):
    m = resolve("dogs", {"strategy": "wordnet", "mode": "subtree", "roots": ["dog.n.01"]}, meta)
    assert m.num_classes == 118
    assert [c.index for c in m.classes] == list(range(DOG_FIRST, DOG_LAST + 1))
    names = {c.wnid: c.name for c in m.classes}
    assert names["n02085620"] == "Chihuahua" and "n02110958" in names  # pug
    assert "n02091032" in names  # Italian greyhound: under dog.n.01 on one of its three hypernym paths
    for outsider in ("n02115641", "n02114367", "n02116738"):  # dingo, timber wolf, African hunting dog
        assert outsider not in names
    assert len(m.indices["train"]) == 118 * 4 and len(m.indices["val"]) == 118 * 2
    # a root given by wnid, and several roots
    by_wnid = resolve("dogs", {"strategy": "wordnet", "mode": "subtree", "roots": ["n02084071"]}, meta)
    assert chosen(by_wnid) == chosen(m)
    both = resolve("pets", {"strategy": "wordnet", "mode": "subtree", "roots": ["dog.n.01", "domestic_cat.n.01"]},
                   meta)
    assert both.num_classes == 118 + 5  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_dog_subtree_matches_the_corpus(meta, corpus):
    dog = corpus.synset("dog.n.01")
    expected = []
    for c in meta.classes:
        s = synset_by_wnid(corpus, c.wnid)
        if dog in s.closure(lambda x: x.hypernyms() + x.instance_hypernyms()):
            expected.append(c.wnid)
    assert len(expected) == 118
    m = resolve("dogs", {"strategy": "wordnet", "mode": "subtree", "roots": ["dog.n.01"]}, meta)
    assert chosen(m) == expected


def test_subtree_with_k_spreads_over_dog_groups(meta, no_corpus):
    m = resolve("dogs10", {"strategy": "wordnet", "mode": "subtree", "roots": ["dog.n.01"], "k": 10, "depth": 14},
                meta)
    assert m.num_classes == 10
    hier = load_hierarchy([c.wnid for c in meta.classes])
    groups = {hier.group(hier.synset(w), 14) for w in chosen(m)}  # depth 14: hunting/working/toy dog, ...
    assert {"hunting_dog.n.01", "working_dog.n.01", "toy_dog.n.01"} <= groups


# --- cover -------------------------------------------------------------------------------------
def test_cover_touches_more_groups_than_a_contiguous_slice(meta, no_corpus):
    m = resolve("cover100", {"strategy": "wordnet", "k": 100}, meta)
    assert m.num_classes == 100
    wnids = [c.wnid for c in meta.classes]
    hier = load_hierarchy(wnids)
    cover = group_coverage(hier, chosen(m), wnids, 6)
    first100 = group_coverage(hier, wnids[:100], wnids, 6)
    even100 = group_coverage(hier, chosen(resolve("u", {"strategy": "uniform", "k": 100}, meta)), wnids, 6)
    assert cover["groups_total"] == 76
    assert cover["groups_covered"] == 76  # every group at depth 6 gets a class
    assert first100["groups_covered"] == 1  # fish, birds, amphibians, reptiles: all animal.n.01
    assert cover["groups_covered"] > even100["groups_covered"] > first100["groups_covered"]
    # even allocation: no group gets more than ceil(100 / 76) + its fair share of small groups' leftovers
    assert max(g["chosen"] for g in cover["groups"]) == 2
    # describe() reports the same coverage
    assert get_strategy("wordnet").describe(m.params, meta)["wordnet"] == cover


def test_cover_allocations_seed_and_determinism(meta, no_corpus):
    base = {"strategy": "wordnet", "k": 100, "depth": 4}
    even = resolve("e", base, meta)
    prop = resolve("p", {**base, "allocation": "proportional"}, meta)
    wnids = [c.wnid for c in meta.classes]
    hier = load_hierarchy(wnids)
    cov = {g["group"]: g for g in group_coverage(hier, chosen(prop), wnids, 4)["groups"]}
    assert cov["artifact.n.01"]["chosen"] == 52 and cov["living_thing.n.01"]["chosen"] == 41  # 522 and 410 of 1000
    cov_even = {g["group"]: g for g in group_coverage(hier, chosen(even), wnids, 4)["groups"]}
    assert cov_even["artifact.n.01"]["chosen"] == cov_even["living_thing.n.01"]["chosen"] == 18
    assert cov_even["cliff.n.01"]["chosen"] == 1  # every small group taken whole
    assert chosen(resolve("e", base, meta)) == chosen(even)
    # k=12 over 14 groups: one class each for the 8 largest, and 4 of the 6 one-class groups, which the
    # seed picks
    picks = [group_coverage(hier, chosen(resolve("e", {**base, "k": 12, "seed": s}, meta)), wnids, 4)
             for s in range(6)]
    assert all(p["groups_covered"] == 12 for p in picks)
    one_class = [{g["group"] for g in p["groups"] if g["total"] == 1 and g["chosen"]} for p in picks]
    assert all(len(x) == 4 for x in one_class) and len({frozenset(x) for x in one_class}) > 1


# --- the shipped hierarchy ---------------------------------------------------------------------
def test_shipped_hierarchy_covers_imagenet_1k(meta):
    doc = json.loads(HIERARCHY_FILE.read_text())
    assert shipped_wnids() == sorted(c.wnid for c in meta.classes)
    assert doc["wordnet_version"] == "3.0" and doc["path_rule"] == PATH_RULE
    tench = doc["classes"]["n01440764"]
    assert tench["synset"] == "tench.n.01" and "Tinca_tinca" in tench["lemmas"]
    assert tench["path"][0] == "entity.n.01" and tench["path"][-1] == "tench.n.01"
    hier = load_hierarchy(shipped_wnids())
    for entry in doc["classes"].values():
        assert list(hier.path(entry["synset"])) == entry["path"]
    assert sum("dog.n.01" in e["path"] for e in doc["classes"].values()) == 118


def test_shipped_hierarchy_agrees_with_nltk(meta, corpus):
    wnids = [c.wnid for c in meta.classes]
    doc = build_doc(corpus, wnids)
    assert dump_doc(doc) == HIERARCHY_FILE.read_text()  # byte for byte what the build script writes
    hier = load_hierarchy(wnids)
    for w in wnids:
        s = synset_by_wnid(corpus, w)
        nltk_paths = sorted(tuple(x.name() for x in p) for p in s.hypernym_paths())
        assert sorted(hier.paths(s.name())) == nltk_paths
        closure = {x.name() for x in s.closure(lambda x: x.hypernyms() + x.instance_hypernyms())} | {s.name()}
        assert hier.ancestors(s.name()) == closure
        assert hier.lemmas[w] == s.lemma_names()


# --- wnids beyond ImageNet-1K ------------------------------------------------------------------
def extra_meta() -> DatasetMeta:
    """Classes outside ImageNet-1K: dog.n.01 itself (an ImageNet-21K class) next to two 1K classes."""
    return meta_of([ClassInfo(0, "n01440764", "tench"), ClassInfo(1, "n02084071", "dog"),
                    ClassInfo(2, "n02085620", "Chihuahua")])


def test_wnids_outside_imagenet_1k_use_nltk(corpus):
    m = resolve("d", {"strategy": "wordnet", "mode": "subtree", "roots": ["domestic_dog.n.01"]}, extra_meta())
    assert chosen(m) == ["n02084071", "n02085620"]  # an alias of dog.n.01, found by nltk


def test_wnids_outside_imagenet_1k_without_corpus_is_a_clear_error(no_corpus):
    with pytest.raises(SubsetError) as exc:
        resolve("d", {"strategy": "wordnet", "mode": "subtree", "roots": ["dog.n.01"]}, extra_meta())
    assert "n02084071" in exc.value.expected and "install_wordnet.sh" in exc.value.expected


# --- bad inputs --------------------------------------------------------------------------------
def test_bad_inputs_without_corpus(meta, no_corpus):
    def err(table, meta_=meta):
        with pytest.raises(SubsetError) as exc:
            resolve("x", {"strategy": "wordnet", **table}, meta_)
        return exc.value

    e = err({"mode": "subtree", "roots": ["dgo.n.01"]})
    assert e.key == "roots" and "'dgo.n.01' is not in the shipped ImageNet hierarchy" in e.expected
    assert err({"mode": "subtree", "roots": ["dog"]}).key == "roots"
    assert err({"mode": "subtree", "roots": []}).key == "roots"
    e = err({"mode": "subtree", "roots": ["dog.n.01"], "k": 200})
    assert e.key == "k" and "at most 118" in e.expected
    assert err({"mode": "subtree", "roots": ["dog.n.01"], "depth": 3}).key == "depth"  # depth needs k
    e = err({"k": 1001})
    assert e.key == "k" and "at most 1000" in e.expected
    assert err({}).key == "k"  # cover needs k
    assert err({"k": 5, "roots": ["dog.n.01"]}).key == "roots"
    assert err({"k": 5, "mode": "tree"}).key == "mode"
    assert err({"k": 5, "allocation": "random"}).key == "allocation"
    assert err({"k": 5, "depth": -1}).key == "depth"
    digits = meta_of([ClassInfo(i, str(i), str(i)) for i in range(10)])
    e = err({"k": 5}, digits)
    assert "no WordNet corpus" in e.expected


def test_bad_roots_with_corpus(meta, corpus):
    with pytest.raises(SubsetError, match="'dgo.n.01' does not exist in WordNet 3.0"):
        resolve("x", {"strategy": "wordnet", "mode": "subtree", "roots": ["dgo.n.01"]}, meta)
    with pytest.raises(SubsetError, match="none under emotion.n.01"):
        resolve("x", {"strategy": "wordnet", "mode": "subtree", "roots": ["emotion.n.01"]}, meta)
    digits = meta_of([ClassInfo(i, str(i), str(i)) for i in range(10)])
    with pytest.raises(SubsetError, match="WordNet 3.0 noun ids"):
        resolve("x", {"strategy": "wordnet", "k": 5}, digits)


def test_canonical_params():
    assert validate_table({"strategy": "wordnet", "mode": "subtree", "roots": "dog.n.01"}) == {
        "strategy": "wordnet", "mode": "subtree", "roots": ["dog.n.01"]}
    assert validate_table({"strategy": "wordnet", "k": 10}) == {
        "strategy": "wordnet", "mode": "cover", "k": 10, "depth": 6, "allocation": "even", "seed": 0}


# --- manifests: identical across runs and processes --------------------------------------------
HASH_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_subsets_wordnet import meta_of
from subsets import ClassInfo, resolve
classes = [ClassInfo(*c) for c in json.load(open(sys.argv[1]))]
tables = json.loads(sys.argv[2])
print(json.dumps({{n: resolve(n, t, meta_of(classes)).content_hash for n, t in tables.items()}}))
"""


def test_wordnet_manifests_identical_across_processes(meta, tmp_path, no_corpus):
    tables = {
        "cover": {"strategy": "wordnet", "k": 100, "seed": 3},
        "prop": {"strategy": "wordnet", "k": 50, "depth": 5, "allocation": "proportional", "fraction": 0.5},
        "dogs": {"strategy": "wordnet", "mode": "subtree", "roots": ["dog.n.01"], "k": 20},
        "in100": {"strategy": "named", "list": "imagenet100"},
    }
    here = {n: resolve(n, t, meta).content_hash for n, t in tables.items()}
    assert here == {n: resolve(n, t, meta).content_hash for n, t in tables.items()}
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps([[c.index, c.wnid, c.name] for c in meta.classes]))
    script = HASH_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"))
    for seed in ("7", "8"):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"],
               "NLTK_DATA": os.environ["NLTK_DATA"]}
        out = subprocess.run([sys.executable, "-c", script, str(classes), json.dumps(tables)], capture_output=True,
                             text=True, check=True, env=env)
        assert json.loads(out.stdout) == here


PINNED = {  # manifest hashes on the in-memory ImageNet-1K of meta_of(): they enter every job's identity
    "full": ({"strategy": "full"}, "73f1e37ea54baf88"),
    "even100": ({"strategy": "uniform", "k": 100}, "d8ab08716109a9eb"),
    "in100": ({"strategy": "named", "list": "imagenet100"}, "53216200bbebd15e"),
    "cover100": ({"strategy": "wordnet", "k": 100}, "fd58d3972e170430"),
    "dogs": ({"strategy": "wordnet", "mode": "subtree", "roots": ["dog.n.01"]}, "098a2ab8aa0f92a9"),
    "half": ({"strategy": "full", "fraction": 0.5, "fraction_seed": 1}, "30d47709144b1fab"),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_manifest_hashes(meta, no_corpus, name):
    """A change here changes the identity of every job on these subsets: only ever on purpose."""
    assert meta.fingerprint == "d2882b7119fe7c91"
    table, expected = PINNED[name]
    assert resolve(name, table, meta).content_hash == expected
