"""The shipped example grids stay valid: they parse, their subsets resolve and their models build.

``examples/imagenet.toml`` points at an ImageNet-1K that cannot exist here; it is checked against
metadata of the real 1,000 ImageNet classes (wnids and names from timm, sample labels only; no images).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from orchestrator.grid import expand, load_grid
from orchestrator.preflight import check_backbones
from subsets import ClassInfo, DatasetMeta, resolve
from tests.conftest import write_meta_dir

REPO = Path(__file__).resolve().parents[1]


def imagenet_meta_dir(root: Path, train_per_class: int = 20, val_per_class: int = 2) -> DatasetMeta:
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    classes = [ClassInfo(i, w, info.index_to_description(i).split(",")[0]) for i, w in enumerate(info.label_names())]
    n = len(classes)
    labels = {"train": np.repeat(np.arange(n), train_per_class), "val": np.repeat(np.arange(n), val_per_class)}
    meta = DatasetMeta(root, "imagenet-1k", classes, {"train": "train.beton", "val": "val.beton"}, labels)
    meta.save()
    return DatasetMeta.load(root)


def test_imagenet_example_expands_to_the_study_it_describes(tmp_path: Path) -> None:
    meta = imagenet_meta_dir(tmp_path / "imagenet-ffcv")
    text = (REPO / "examples" / "imagenet.toml").read_text()
    assert 'root = "/datasets/imagenet-ffcv"' in text
    grid_file = tmp_path / "imagenet.toml"
    grid_file.write_text(text.replace('root = "/datasets/imagenet-ffcv"', f'root = "{meta.root}"'))
    grid = load_grid(grid_file)
    check_backbones(grid)
    jobs = expand(grid, meta)
    assert len(jobs) == 408  # 8 subsets x 17 configurations x 3 seeds, as its header says
    per_subset = Counter(j.subset_name for j in jobs)
    assert set(per_subset.values()) == {51}
    sizes = {name: resolve(name, grid.subsets[name], meta) for name in per_subset}
    assert {n: m.num_classes for n, m in sizes.items()} == {
        "full": 1000, "even100": 100, "random100": 100, "imagenet100": 100, "wordnet_cover100": 100,
        "dogs": 118, "full_10pct": 1000, "even100_30pct": 100}
    assert len(sizes["full_10pct"].indices["train"]) == 2000  # 10% of 20 images per class
    assert len(sizes["even100_30pct"].indices["train"]) == 600
    configs = {j.config_name for j in jobs}
    assert len(configs) == 17 and "simclr[backbone=resnet50,lr=0.6,temperature=0.2]" in configs, configs
    methods = {j.spec.method for j in jobs}
    assert methods == {"supervised", "simclr", "mocov2", "mocov3", "byol", "dino", "mae"}
    mae = next(j.spec for j in jobs if j.spec.method == "mae")
    assert mae.train.backbone == "vit_base_patch16_224" and mae.train.lr_scaling == "linear"


def test_quickstart_example_is_the_grid_the_readme_describes(tmp_path: Path) -> None:
    grid = load_grid(REPO / "examples" / "quickstart.toml")
    assert grid.dataset_prepare == "digits"
    assert set(grid.subsets) == {"full", "even5", "full_30pct"}
    check_backbones(grid)
    jobs = expand(grid, write_meta_dir(tmp_path / "digits", num_classes=10, train_per_class=20))
    assert len(jobs) == 30  # 3 subsets x 5 configurations x 2 seeds, as the README says
    assert {j.config_name for j in jobs} == {"supervised[lr=0.001]", "supervised[lr=0.01]", "supervised[lr=0.1]",
                                             "supervised_adamw", "simclr"}
    assert Counter((j.subset_name, j.spec.seed) for j in jobs) == {
        (s, seed): 5 for s in ("full", "even5", "full_30pct") for seed in (0, 1)}
    assert len({j.spec.job_hash for j in jobs}) == 30


def fashion_meta_dir(root: Path, train_per_class: int, val_per_class: int) -> DatasetMeta:
    """Metadata of a Fashion-MNIST shard (the real classes; labels only, no images)."""
    from workers.data.fashion_mnist import FASHION_CLASSES

    labels = {"train": np.repeat(np.arange(10), train_per_class), "val": np.repeat(np.arange(10), val_per_class)}
    DatasetMeta(root, "fashion-mnist", FASHION_CLASSES, {"train": "train.beton", "val": "val.beton"}, labels).save()
    return DatasetMeta.load(root)


def test_fashion_study_is_the_study_its_header_describes(tmp_path: Path) -> None:
    grid = load_grid(REPO / "examples" / "fashion_study.toml")
    assert grid.dataset_prepare == "fashion-mnist" and grid.seeds == [0, 1, 2]
    check_backbones(grid)
    meta = fashion_meta_dir(tmp_path / "fm", **grid.dataset_limits)
    jobs = expand(grid, meta)
    assert len(jobs) == 108  # 4 subsets x 9 configurations x 3 seeds
    configs = {j.config_name for j in jobs}
    assert len(configs) == 9 and {j.spec.method for j in jobs} == {"supervised", "simclr", "rotnet"}
    sizes = {name: resolve(name, grid.subsets[name], meta) for name in grid.subsets}
    assert {n: m.num_classes for n, m in sizes.items()} == {
        "full": 10, "even5": 5, "full_30pct": 10, "hardest5": 5}
    assert len(sizes["full"].indices["train"]) == 3000 and len(sizes["full_30pct"].indices["train"]) == 900
    hardest = {c.name for c in sizes["hardest5"].classes}
    assert "Shirt" in hardest and "Trouser" not in hardest  # from examples/fashion_class_accuracy.csv


def test_every_example_grid_is_valid() -> None:
    """Grids on a builtin dataset load as they are; the ImageNet ones are checked against metadata (above, and
    in tests/test_lottery_grid.py)."""
    grids = sorted((REPO / "examples").glob("*.toml"))
    assert {p.name for p in grids} >= {"imagenet.toml", "quickstart.toml", "fashion_study.toml"}
    for path in grids:
        if "imagenet" not in path.name:
            check_backbones(load_grid(path))


def test_methods_digits_example_has_every_method() -> None:
    from specs.methods import METHOD_HPARAMS

    grid = load_grid(REPO / "examples" / "methods_digits.toml")
    assert {mt.method for mt in grid.methods.values()} == set(METHOD_HPARAMS)
    assert grid.eval.protocols == ["knn", "linear"] and grid.report.metric == "linear_top1"
    vit = {name for name, mt in grid.methods.items() if mt.fixed.get("backbone") == "test_vit"}
    assert vit == {"mae", "dino", "mocov3"}
    check_backbones(grid)
