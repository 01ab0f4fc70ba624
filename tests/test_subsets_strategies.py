"""Subset strategies on small in-memory datasets: uniform, named, per_class_accuracy, fraction, manifests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from subsets import ClassInfo, DatasetMeta, SubsetError, resolve, validate_table
from subsets.accuracy_file import read_accuracy_file, write_accuracy_file
from subsets.base import OPTIONAL, stratified_fraction
from subsets.named import builtin_lists
from subsets.spread import allocate, even_positions

REPO = Path(__file__).resolve().parents[1]


def make_meta(n_classes: int = 20, train_per_class: int = 10, val_per_class: int = 3, root: Path | None = None,
              uneven: bool = False) -> DatasetMeta:
    """A dataset of ``n_classes`` fake wnids with labelled samples (no images needed by subsets)."""
    classes = [ClassInfo(i, f"n{10000000 + 7 * i:08d}", f"class {i}") for i in range(n_classes)]
    counts = [train_per_class + (i % 5 if uneven else 0) for i in range(n_classes)]
    train = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    rng = np.random.default_rng(123)
    train = train[rng.permutation(len(train))]  # interleaved like a real file
    val = np.repeat(np.arange(n_classes), val_per_class)
    return DatasetMeta(root or Path("/nonexistent"), "fake", classes, {"train": "train.beton", "val": "val.beton"},
                       {"train": train.astype(np.int64), "val": val.astype(np.int64)})


@pytest.fixture
def meta() -> DatasetMeta:
    return make_meta()


def wnids(manifest) -> list[str]:
    return [c.wnid for c in manifest.classes]


# --- spread helpers ---------------------------------------------------------------------------
def test_even_positions_centred_and_with_endpoints():
    assert even_positions(10, 5) == [1, 3, 5, 7, 9]
    assert even_positions(10, 1) == [5]
    assert even_positions(10, 3, endpoints=True) == [0, 5, 9]  # 4.5 rounds up
    assert even_positions(7, 7, endpoints=True) == list(range(7))
    assert even_positions(5, 5) == list(range(5))
    with pytest.raises(ValueError):
        even_positions(3, 4)


def test_allocate_even_waterfills_and_proportional_rounds_by_largest_remainder():
    sizes = {"a": 1, "b": 2, "c": 10, "d": 10}
    assert allocate(sizes, 9, "even") == {"a": 1, "b": 2, "c": 3, "d": 3}
    assert allocate(sizes, 23, "even") == sizes
    assert allocate(sizes, 2, "even", seed=0) in ({"a": 0, "b": 0, "c": 1, "d": 1},)  # larger groups first
    # exact shares 0.43, 0.87, 4.35, 4.35: floors 0, 0, 4, 4, the two leftovers by largest remainder
    assert allocate(sizes, 10, "proportional") == {"a": 1, "b": 1, "c": 4, "d": 4}
    # equal groups: the seed decides who gets the odd pick, deterministically
    eq = {"x": 3, "y": 3, "z": 3}
    picks = {tuple(sorted(allocate(eq, 1, "even", seed=s).items())) for s in range(20)}
    assert len(picks) == 3  # every group wins for some seed
    assert allocate(eq, 1, "even", seed=5) == allocate(eq, 1, "even", seed=5)
    assert sum(allocate(sizes, 13, "proportional").values()) == 13


# --- uniform / full ---------------------------------------------------------------------------
def test_full_and_uniform(meta):
    full = resolve("full", {"strategy": "full"}, meta)
    assert full.num_classes == 20 and len(full.indices["train"]) == 200 and len(full.indices["val"]) == 60
    even = resolve("u", {"strategy": "uniform", "k": 5}, meta)
    assert [c.index for c in even.classes] == [0, 4, 8, 12, 16]
    r1 = resolve("r", {"strategy": "uniform", "k": 5, "mode": "random", "seed": 1}, meta)
    r2 = resolve("r", {"strategy": "uniform", "k": 5, "mode": "random", "seed": 2}, meta)
    assert r1.num_classes == r2.num_classes == 5 and wnids(r1) != wnids(r2)
    assert wnids(r1) == wnids(resolve("r", {"strategy": "uniform", "k": 5, "mode": "random", "seed": 1}, meta))
    # every sample of the chosen classes, in file order
    labels = meta.labels["train"][even.indices["train"]]
    assert set(labels.tolist()) == {0, 4, 8, 12, 16} and len(labels) == 50
    assert np.all(np.diff(even.indices["train"]) > 0)


# --- named -------------------------------------------------------------------------------------
def test_named_file_list_and_inline(meta, tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text(f"# my classes\n{meta.classes[7].wnid}  seven\n\n{meta.classes[2].wnid}\n")
    m = resolve("mine", {"strategy": "named", "wnids_file": str(f)}, meta)
    assert [c.index for c in m.classes] == [2, 7]
    inline = resolve("in", {"strategy": "named", "wnids": [meta.classes[7].wnid, meta.classes[2].wnid]}, meta)
    assert [c.index for c in inline.classes] == [2, 7]
    # the file's content enters the identity: editing it changes the hash, moving it does not
    canon = validate_table({"strategy": "named", "wnids_file": str(f)})
    moved = tmp_path / "sub" / "mine.txt"
    moved.parent.mkdir()
    moved.write_text(f.read_text())
    assert resolve("mine", {"strategy": "named", "wnids_file": str(moved)}, meta).content_hash == m.content_hash
    f.write_text(f"{meta.classes[7].wnid}\n{meta.classes[3].wnid}\n")
    assert validate_table({"strategy": "named", "wnids_file": str(f)})["wnids_sha"] != canon["wnids_sha"]
    with pytest.raises(SubsetError, match="wnids_sha.*changed"):
        resolve("mine", canon, meta)


def test_shipped_imagenet100_list():
    assert "imagenet100" in builtin_lists()
    lines = [ln for ln in (REPO / "subsets/data/imagenet100.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert len(lines) == len(set(lines)) == 100
    assert lines[:3] == ["n02869837", "n01749939", "n02488291"] and lines[-1] == "n02090622"
    canon = validate_table({"strategy": "named", "list": "imagenet100"})
    assert set(canon) == {"strategy", "list", "wnids_sha"}


def test_named_bad_inputs(meta, tmp_path):
    with pytest.raises(SubsetError, match="wnids_file: expected an existing file"):
        validate_table({"strategy": "named", "wnids_file": str(tmp_path / "nope.txt")})
    with pytest.raises(SubsetError, match="exactly one of"):
        validate_table({"strategy": "named", "wnids": ["a"], "list": "imagenet100"})
    with pytest.raises(SubsetError, match="exactly one of"):
        validate_table({"strategy": "named"})
    with pytest.raises(SubsetError, match="list: expected the name of a shipped list"):
        validate_table({"strategy": "named", "list": "imagenet99"})
    dup = tmp_path / "dup.txt"
    dup.write_text("n1\nn2\nn1\n")
    with pytest.raises(SubsetError, match="each wnid once.*lines 1 and 3"):
        validate_table({"strategy": "named", "wnids_file": str(dup)})
    with pytest.raises(SubsetError) as exc:
        resolve("x", {"strategy": "named", "wnids": ["n99999999", meta.classes[0].wnid]}, meta)
    assert exc.value.key == "wnids" and "1 unknown: n99999999" in exc.value.expected


# --- per-class accuracy ------------------------------------------------------------------------
def accuracy_table(meta: DatasetMeta) -> dict[str, float]:
    """Accuracies with ties: class i gets (i // 2) / 10, reversed for half of them."""
    return {c.wnid: round(((c.index * 7) % 10) / 10, 2) for c in meta.classes}


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_accuracy_file_roundtrip(meta, tmp_path, suffix):
    acc = accuracy_table(meta)
    path = write_accuracy_file(tmp_path / f"acc{suffix}", acc)
    assert read_accuracy_file(path) == acc
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temporary left behind
    if suffix == ".csv":
        assert path.read_text().splitlines()[0] == "wnid,accuracy"


def test_per_class_accuracy_easiest_hardest_spread_with_ties(meta, tmp_path):
    acc = accuracy_table(meta)
    path = str(write_accuracy_file(tmp_path / "acc.csv", acc))
    # expected by hand: value v = (7 i mod 10) / 10 -> every value appears twice (i and i + 10)
    by_value: dict[float, list[str]] = {}
    for w, a in acc.items():
        by_value.setdefault(a, []).append(w)
    assert all(len(v) == 2 for v in by_value.values())
    hardest = resolve("h", {"strategy": "per_class_accuracy", "accuracy_file": path, "k": 3, "mode": "hardest"}, meta)
    # 0.0 twice, then 0.1 twice: the tie at 0.1 is broken by the smaller wnid
    assert set(wnids(hardest)) == set(by_value[0.0]) | {min(by_value[0.1])}
    easiest = resolve("e", {"strategy": "per_class_accuracy", "accuracy_file": path, "k": 3, "mode": "easiest"}, meta)
    assert set(wnids(easiest)) == set(by_value[0.9]) | {min(by_value[0.8])}
    spread = resolve("s", {"strategy": "per_class_accuracy", "accuracy_file": path, "k": 4, "mode": "spread"}, meta)
    ranked = sorted(acc, key=lambda w: (acc[w], w))
    assert set(wnids(spread)) == {ranked[0], ranked[6], ranked[13], ranked[19]}  # hardest ... easiest
    # deterministic whatever the order of the file's lines
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("# reordered\n" + "".join(f"{w},{acc[w]}\n" for w in sorted(acc, reverse=True)))
    again = resolve("h", {"strategy": "per_class_accuracy", "accuracy_file": str(shuffled), "k": 3,
                          "mode": "hardest"}, meta)
    assert wnids(again) == wnids(hardest) and again.content_hash == hardest.content_hash


def test_per_class_accuracy_hash_follows_content(meta, tmp_path):
    path = write_accuracy_file(tmp_path / "acc.json", accuracy_table(meta))
    table = {"strategy": "per_class_accuracy", "accuracy_file": str(path), "k": 3, "mode": "hardest"}
    canon = validate_table(table)
    assert len(canon["accuracy_sha"]) == 16
    edited = accuracy_table(meta)
    edited[meta.classes[19].wnid] = 0.55  # a change that does not alter the hardest 3
    write_accuracy_file(path, edited)
    assert validate_table(table)["accuracy_sha"] != canon["accuracy_sha"]
    with pytest.raises(SubsetError, match="accuracy_sha.*changed since"):
        resolve("h", canon, meta)  # a job launched before the edit refuses the new file


def test_per_class_accuracy_bad_inputs(meta, tmp_path):
    base = {"strategy": "per_class_accuracy", "k": 3, "mode": "hardest"}
    with pytest.raises(SubsetError) as exc:
        validate_table({**base, "accuracy_file": str(tmp_path / "missing.csv")})
    assert exc.value.key == "accuracy_file" and "missing.csv" in str(exc.value)
    bad = tmp_path / "bad.csv"
    bad.write_text("wnid,accuracy\nn1,0.5\nn2,high\n")
    with pytest.raises(SubsetError, match="a number as the accuracy of n2 at line 3"):
        validate_table({**base, "accuracy_file": str(bad)})
    bad.write_text("n1,1.5\n")
    with pytest.raises(SubsetError, match=r"in \[0, 1\]"):
        validate_table({**base, "accuracy_file": str(bad)})
    bad.write_text("n1,0.5\nn1,0.6\n")
    with pytest.raises(SubsetError, match="n1 repeats at line 2"):
        validate_table({**base, "accuracy_file": str(bad)})
    partial = write_accuracy_file(tmp_path / "partial.csv", {meta.classes[0].wnid: 0.5})
    with pytest.raises(SubsetError, match="accuracy for every class.*lacks 19"):
        resolve("p", {**base, "accuracy_file": str(partial)}, meta)
    full = write_accuracy_file(tmp_path / "acc.csv", accuracy_table(meta))
    with pytest.raises(SubsetError) as exc:
        resolve("p", {**base, "accuracy_file": str(full), "k": 21}, meta)
    assert exc.value.key == "k" and "at most 20" in exc.value.expected
    with pytest.raises(SubsetError, match="mode: expected one of easiest, hardest, spread"):
        validate_table({**base, "accuracy_file": str(full), "mode": "middle"})


# --- fraction ----------------------------------------------------------------------------------
def test_fraction_is_stratified_seeded_and_nested():
    meta = make_meta(n_classes=6, train_per_class=40, uneven=True)
    table = {"strategy": "full", "fraction": 0.25, "fraction_seed": 3}
    m = resolve("f", table, meta)
    labels = meta.labels["train"]
    counts = np.bincount(labels[m.indices["train"]], minlength=6)
    expected = [int(np.floor(0.25 * c + 0.5)) for c in np.bincount(labels)]
    assert counts.tolist() == expected  # per class, not overall
    assert len(m.indices["val"]) == len(meta.labels["val"])  # val keeps every image
    assert np.array_equal(resolve("f", table, meta).indices["train"], m.indices["train"])  # same seed: same
    other = resolve("f", {**table, "fraction_seed": 4}, meta)
    assert not np.array_equal(other.indices["train"], m.indices["train"])
    assert other.content_hash != m.content_hash
    # a smaller fraction keeps a subset of a larger one's samples
    small = resolve("f", {**table, "fraction": 0.1}, meta)
    assert set(small.indices["train"]) < set(m.indices["train"])
    # a class keeps the same samples whichever other classes are in the subset
    two = resolve("f", {"strategy": "named", "wnids": [meta.classes[1].wnid, meta.classes[4].wnid],
                        "fraction": 0.25, "fraction_seed": 3}, meta)
    in_two = set(two.indices["train"][labels[two.indices["train"]] == 4])
    in_full = set(m.indices["train"][labels[m.indices["train"]] == 4])
    assert in_two == in_full
    # at least one sample per class
    tiny = stratified_fraction(labels, np.arange(len(labels)), 0.001, 0)
    assert np.bincount(labels[tiny]).tolist() == [1] * 6


def test_fraction_bad_inputs():
    with pytest.raises(SubsetError, match="fraction: expected a number in"):
        validate_table({"strategy": "full", "fraction": 1.5})
    with pytest.raises(SubsetError, match="fraction_seed"):
        validate_table({"strategy": "full", "fraction": 0.5, "fraction_seed": -1})


# --- generic errors ----------------------------------------------------------------------------
def test_bad_tables(meta):
    with pytest.raises(SubsetError) as exc:
        validate_table({"strategy": "nope"})
    assert exc.value.key == "strategy" and "wordnet" in exc.value.expected and "named" in exc.value.expected
    with pytest.raises(SubsetError, match="colour: expected one of the keys of strategy 'uniform'"):
        validate_table({"strategy": "uniform", "k": 3, "colour": "red"})
    with pytest.raises(SubsetError, match="k: expected at most 20"):
        resolve("u", {"strategy": "uniform", "k": 21}, meta)
    with pytest.raises(SubsetError, match="k: expected a value"):
        validate_table({"strategy": "uniform"})
    assert repr(OPTIONAL) == "OPTIONAL"


# --- manifests: identical across runs and processes --------------------------------------------
HASH_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_subsets_strategies import make_meta
from subsets import resolve
meta = make_meta()
tables = json.loads(sys.argv[1])
print(json.dumps({{n: resolve(n, t, meta).content_hash for n, t in tables.items()}}))
"""


def test_manifest_hash_is_identical_across_processes(meta, tmp_path):
    acc = write_accuracy_file(tmp_path / "acc.csv", accuracy_table(meta))
    tables = {
        "full": {"strategy": "full"},
        "even": {"strategy": "uniform", "k": 7},
        "random": {"strategy": "uniform", "k": 7, "mode": "random", "seed": 9, "fraction": 0.5, "fraction_seed": 2},
        "hard": {"strategy": "per_class_accuracy", "accuracy_file": str(acc), "k": 4, "mode": "hardest"},
        "named": {"strategy": "named", "wnids": [meta.classes[3].wnid]},
    }
    here = {n: resolve(n, t, meta).content_hash for n, t in tables.items()}
    assert len(set(here.values())) == len(here)
    script = HASH_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"))
    for seed in ("1", "2"):  # different str hash seeds: no set/dict-order dependence
        out = subprocess.run([sys.executable, "-c", script, json.dumps(tables)], capture_output=True, text=True,
                             check=True, env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"})
        assert json.loads(out.stdout) == here
