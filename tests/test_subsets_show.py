"""``dlth-orch subsets show GRID``: a real grid file over a real dataset directory (meta.json + labels of
ImageNet-1K's 1,000 classes, fake samples; no images are needed to describe subsets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator.cli import main
from subsets import ClassInfo, DatasetMeta
from subsets.accuracy_file import write_accuracy_file
from subsets.show import subsets_report

GRID = """
name = "show-test"
[dataset]
root = "data/in1k"
[subsets.full]
strategy = "full"
[subsets.in100]
strategy = "named"
list = "imagenet100"
[subsets.dogs]
strategy = "wordnet"
mode = "subtree"
roots = ["dog.n.01"]
fraction = 0.5
[subsets.cover]
strategy = "wordnet"
k = 100
[subsets.hard]
strategy = "per_class_accuracy"
accuracy_file = "acc.csv"      # relative to the grid file
k = 10
mode = "hardest"
[methods.supervised]
"""


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    root = tmp_path_factory.mktemp("grid")
    classes = [ClassInfo(i, w, info.index_to_description(i).split(",")[0]) for i, w in enumerate(info.label_names())]
    DatasetMeta(root / "data/in1k", "in1k", classes, {"train": "train.beton", "val": "val.beton"},
                {"train": np.tile(np.arange(1000), 4), "val": np.repeat(np.arange(1000), 2)}).save()
    write_accuracy_file(root / "acc.csv", {c.wnid: (c.index % 100) / 100 for c in classes})
    (root / "grid.toml").write_text(GRID)
    return root / "grid.toml"


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_show_json(grid, capsys):
    code, out, err = run_cli(["subsets", "show", str(grid), "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["dataset"]["num_classes"] == 1000 and rep["dataset"]["num_samples"] == {"train": 4000, "val": 2000}
    subs = rep["subsets"]
    assert list(subs) == ["full", "in100", "dogs", "cover", "hard"]
    assert subs["full"]["num_samples"] == {"train": 4000, "val": 2000}
    assert subs["in100"]["num_classes"] == 100 and subs["in100"]["fraction_of_full"]["train"] == 0.1
    dogs = subs["dogs"]
    assert dogs["num_classes"] == 118 and dogs["num_samples"] == {"train": 236, "val": 236}  # half the train images
    assert {"index": 151, "wnid": "n02085620", "name": "Chihuahua"} in dogs["classes"]
    assert dogs["details"]["wordnet"]["roots"] == ["dog.n.01"]
    assert dogs["details"]["wordnet"]["groups_covered"] == 1  # every dog is an animal.n.01 at depth 6
    assert subs["cover"]["details"]["wordnet"]["groups_covered"] == 76
    hard = subs["hard"]
    assert [c["index"] for c in hard["classes"]] == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]  # accuracy 0
    assert hard["details"]["accuracy"] == {"min": 0.0, "max": 0.0, "mean": 0.0}
    assert len({s["hash"] for s in subs.values()}) == 5


def test_show_tables(grid, capsys):
    code, out, err = run_cli(["subsets", "show", str(grid), "--max-classes", "5"], capsys)
    assert code == 0, err
    assert "dogs: 118 classes" in out and "Chihuahua" in out
    assert "113 more" in out  # 118 classes, 5 listed
    assert "WordNet groups at depth 6: 76 of 76 covered" in out
    assert "per-class accuracy of the chosen classes 0.000 .. 0.000" in out


def test_report_function_matches_cli(grid, capsys):
    from orchestrator.grid import load_grid

    spec = load_grid(grid)
    rep = subsets_report(spec.subsets, DatasetMeta.load(spec.dataset_root))
    code, out, _ = run_cli(["subsets", "show", str(grid), "--json"], capsys)
    assert json.loads(out) == json.loads(json.dumps(rep))


@pytest.mark.parametrize(("table", "message"), [
    ('[subsets.bad]\nstrategy = "named"\nwnids = ["n99999999"]\n',
     "subsets.bad.wnids: expected classes of the dataset"),
    ('[subsets.bad]\nstrategy = "uniform"\nk = 1001\n', "subsets.bad.k: expected at most 1000"),
    ('[subsets.bad]\nstrategy = "wordnet"\nmode = "subtree"\nroots = ["dgo.n.01"]\n', "subsets.bad.roots: expected"),
    ('[subsets.bad]\nstrategy = "per_class_accuracy"\naccuracy_file = "missing.csv"\nk = 3\nmode = "easiest"\n',
     "subsets.bad.accuracy_file: expected an existing per-class accuracy file"),
])
def test_bad_subset_is_one_line_and_exit_2(grid, capsys, tmp_path, table, message):
    bad = grid.parent / "bad.toml"
    bad.write_text(GRID.replace("[methods.supervised]", table + "[methods.supervised]"))
    code, out, err = run_cli(["subsets", "show", str(bad)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "bad.toml" in lines[0] and message in lines[0], err


def test_show_piped_keeps_values_whole(grid, capsys):
    """capsys is no terminal, as a pipe: no cell is cut short (rich's ellipsis) or folded onto two lines."""
    from orchestrator.grid import load_grid

    code, out, err = run_cli(["subsets", "show", str(grid)], capsys)
    assert code == 0, err
    assert "…" not in out
    spec = load_grid(grid)
    hashes = json.loads(run_cli(["subsets", "show", str(grid), "--json"], capsys)[1])["subsets"]
    for name in spec.subsets:  # every summary row holds its whole params text and its whole hash on one line
        row = next(ln for ln in out.splitlines() if ln.count("│") > 2 and ln.split("│")[1].strip() == name)
        assert hashes[name]["hash"] in row
    assert "mode=subtree roots=['dog.n.01'] fraction=0.5" in out
