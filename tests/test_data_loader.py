"""Subset loaders against real .beton files: exact samples, remapped labels, order, views, DDP shares.

Every image of the test dataset is one flat colour encoding its position in the split
(tests/data_fixtures.py), so the loaders' outputs identify exactly which samples were read.
FFCV compiles every new loader with numba (seconds each): the dataset is shared per module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from subsets import resolve
from subsets.meta import DatasetMeta
from tests.data_fixtures import SPLIT_MARK, decode_ids, distributed_rank_main, make_id_folder
from workers.data.loader import build_loader
from workers.data.write import write_image_folder

NUM_CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 7, 10, 5


@pytest.fixture(autouse=True)
def _ffcv_jit_on():
    """FFCV's JIT on, as in a fresh process: an in-process training test of the same xdist worker may have
    switched it off for a tiny subset (workers/data/jit.py sets it per loader, process-wide)."""
    from ffcv.pipeline.compiler import Compiler

    was = Compiler.is_enabled
    Compiler.set_enabled(True)
    yield
    Compiler.set_enabled(was)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetMeta, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("idset")
    expected = make_id_folder(root / "src", NUM_CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS)
    meta = write_image_folder(root / "src", root / "ds", write_mode="raw", max_resolution=64, page_size=2**21,
                              num_workers=1, progress=False)
    return meta, expected


def _collect(loader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids, marks, labels = [], [], []
    for views, lab in loader:
        i, m = decode_ids(views[0])
        ids.append(i)
        marks.append(m)
        labels.append(lab.numpy())
    return np.concatenate(ids), np.concatenate(marks), np.concatenate(labels)


def test_write_then_read_back_every_sample_in_order(dataset) -> None:
    meta, expected = dataset
    for split in ("train", "val"):
        np.testing.assert_array_equal(meta.labels[split], expected[split])
    full = resolve("full", {"strategy": "full"}, meta)
    loader = build_loader(meta, full, "val", recipe="eval", batch_size=8, image_size=32, seed=0, train=False)
    assert len(loader) == 5 and loader.num_samples == 35  # eval keeps the last, partial batch
    ids, marks, labels = _collect(loader)
    np.testing.assert_array_equal(ids, np.arange(NUM_CLASSES * VAL_PER_CLASS))
    assert set(marks) == {SPLIT_MARK["val"]}
    np.testing.assert_array_equal(labels, expected["val"])


def test_class_subset_reads_exactly_its_samples_with_remapped_labels(dataset) -> None:
    meta, expected = dataset
    manifest = resolve("k3", {"strategy": "uniform", "k": 3}, meta)
    chosen = [c.index for c in manifest.classes]
    want = np.flatnonzero(np.isin(expected["train"], chosen))
    np.testing.assert_array_equal(manifest.indices["train"], want)
    loader = build_loader(meta, manifest, "train", recipe="eval", batch_size=8, image_size=24, seed=0, train=False)
    ids, marks, labels = _collect(loader)
    np.testing.assert_array_equal(ids, want)
    assert set(marks) == {SPLIT_MARK["train"]}
    remap = {orig: new for new, orig in enumerate(chosen)}
    np.testing.assert_array_equal(labels, [remap[c] for c in expected["train"][want]])
    assert set(labels) == {0, 1, 2}


@pytest.mark.slow  # trains, or compiles FFCV pipelines
def test_training_order_is_seeded_per_epoch_and_drops_the_last_partial_batch(dataset) -> None:
    meta, expected = dataset
    manifest = resolve("k3", {"strategy": "uniform", "k": 3}, meta)  # 30 train samples
    remap = manifest.label_map(meta.num_classes)
    loader = build_loader(meta, manifest, "train", recipe="supervised", batch_size=8, image_size=32, seed=3,
                          train=True)
    assert len(loader) == 3 and loader.num_samples == 24
    epochs = []
    for _ in range(2):
        ids, _, labels = _collect(loader)
        assert len(ids) == 24 and len(set(ids)) == 24 and set(ids) <= set(manifest.indices["train"])
        np.testing.assert_array_equal(labels, remap[expected["train"][ids]])
        epochs.append(ids)
    assert not np.array_equal(epochs[0], epochs[1])
    loader.set_epoch(0)  # a resumed run sees epoch 0's order again
    np.testing.assert_array_equal(_collect(loader)[0], epochs[0])
    views, labels = next(iter(loader))
    assert views[0].shape == (8, 3, 32, 32) and views[0].dtype == torch.float32 and labels.dtype == torch.int64


@pytest.mark.slow  # trains, or compiles FFCV pipelines
@pytest.mark.parametrize(("recipe", "sizes"), [
    ("simclr", [32, 32]),
    ("mocov2", [32, 32]),
    ("byol", [32, 32]),
    ("dino:2", [32, 32, 14, 14]),
])
def test_ssl_recipes_yield_their_views(dataset, recipe: str, sizes: list[int]) -> None:
    meta, _ = dataset
    full = resolve("full", {"strategy": "full"}, meta)
    loader = build_loader(meta, full, "train", recipe=recipe, batch_size=6, image_size=32, seed=0, train=True)
    assert loader.num_views == len(sizes)
    views, labels = next(iter(loader))
    assert [tuple(v.shape) for v in views] == [(6, 3, s, s) for s in sizes]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    assert labels.shape == (6,) and labels.dtype == torch.int64
    # colour ops act per sample on flat images: views of one batch are not all the same colour shift
    assert not torch.allclose(views[0], views[1])


def test_loader_reads_the_same_without_ffcv_jit(dataset) -> None:
    """Tiny subsets run FFCV uncompiled (workers.data.jit): conversion then happens in torch, same values."""
    from ffcv.pipeline.compiler import Compiler

    meta, expected = dataset
    manifest = resolve("k3", {"strategy": "uniform", "k": 3}, meta)
    was = Compiler.is_enabled
    Compiler.set_enabled(False)
    try:
        loader = build_loader(meta, manifest, "val", recipe="eval", batch_size=4, image_size=16, seed=0, train=False,
                              num_workers=64)  # more threads than numba may use: clamped
        ids, marks, labels = _collect(loader)
        views, _ = next(iter(build_loader(meta, manifest, "train", recipe="byol", batch_size=4, image_size=16,
                                          seed=0, train=True)))
    finally:
        Compiler.set_enabled(was)
    np.testing.assert_array_equal(ids, manifest.indices["val"])
    np.testing.assert_array_equal(labels, manifest.label_map(meta.num_classes)[expected["val"][ids]])
    assert [tuple(v.shape) for v in views] == [(4, 3, 16, 16)] * 2


def _batches(meta: DatasetMeta, recipe: str, *, workers: int, batch_size: int = 8, epochs: int = 2,
             seed: int = 4) -> list[list[torch.Tensor]]:
    """Every view of the first 2 batches of ``epochs`` epochs (cloned: FFCV reuses its buffers)."""
    full = resolve("full", {"strategy": "full"}, meta)
    loader = build_loader(meta, full, "train", recipe=recipe, batch_size=batch_size, image_size=16, seed=seed,
                          train=True, num_workers=workers)
    out = []
    for _ in range(epochs):
        for b, (views, _labels) in enumerate(loader):
            out.append([v.clone() for v in views])
            if b == 1:
                break
    return out


def test_training_batches_repeat_exactly_whatever_the_worker_count(digits: Path) -> None:
    """Crops, flips and colour ops are keyed by (seed, epoch, view, sample index): the same loader built
    again with 1 or 2 loader threads yields bit-identical batches (real digit images; FFCV uncompiled, as
    for every subset under 20,000 images)."""
    from ffcv.pipeline.compiler import Compiler

    meta = DatasetMeta.load(digits)
    was = Compiler.is_enabled
    Compiler.set_enabled(False)
    try:
        one = _batches(meta, "simclr", workers=1)
        two = _batches(meta, "simclr", workers=2)
        wide = _batches(meta, "simclr", workers=2, batch_size=16, epochs=1)
    finally:
        Compiler.set_enabled(was)
    for a, b in zip(one, two, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(one[0][0], one[0][1])  # two views of the same samples differ
    # a sample's augmentation does not depend on its batch: batches of 16 hold the batches of 8
    for v in range(2):
        assert torch.equal(wide[0][v][:8], one[0][v]) and torch.equal(wide[0][v][8:], one[1][v])


@pytest.mark.slow  # trains, or compiles FFCV pipelines
def test_compiled_crops_repeat_whatever_the_thread_count(digits: Path) -> None:
    """FFCV's JIT runs the keyed decoder in numba's threads (each with its own generator, which stock FFCV
    crops draw from): 1 and 2 threads give bit-identical crops and flips."""
    from ffcv.pipeline.compiler import Compiler

    meta = DatasetMeta.load(digits)
    assert Compiler.is_enabled
    one = _batches(meta, "supervised", workers=1, epochs=1)
    two = _batches(meta, "supervised", workers=2, epochs=1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(one, two, strict=True))


def test_gpu_pipeline_copies_uint8_to_the_device_without_blocking() -> None:
    """No GPU here: only the pipeline a CUDA loader would run is checked (the CPU path runs everywhere)."""
    from ffcv.transforms import NormalizeImage, ToDevice, ToTorchImage

    from workers.data.loader import _image_pipeline
    from workers.data.recipes import get_recipe

    view = get_recipe("supervised").views[0]
    gpu = _image_pipeline(view, 32, torch.device("cuda", 0))
    assert [type(op).__name__ for op in gpu] == [
        "KeyedRandomResizedCropDecoder", "ToTensor", "ToDevice", "ToTorchImage"  # (the decoder flips too)
    ]
    assert isinstance(gpu[2], ToDevice) and gpu[2].non_blocking and gpu[3].channels_last
    cpu = _image_pipeline(view, 32, torch.device("cpu"))
    assert isinstance(cpu[1], NormalizeImage) and isinstance(cpu[-1], ToTorchImage)
    assert not any(isinstance(op, ToDevice) for op in cpu)


def test_loader_rejects_a_foreign_manifest_and_a_subset_smaller_than_a_batch(dataset, tmp_path: Path) -> None:
    meta, _ = dataset
    manifest = resolve("k1", {"strategy": "uniform", "k": 1}, meta)
    with pytest.raises(ValueError, match="fewer than one batch"):
        build_loader(meta, manifest, "train", recipe="supervised", batch_size=64, image_size=32, seed=0, train=True)
    manifest.dataset_fingerprint = "0" * 16
    with pytest.raises(ValueError, match="resolved against dataset"):
        build_loader(meta, manifest, "val", recipe="eval", batch_size=4, image_size=32, seed=0, train=False)
    with pytest.raises(ValueError, match="recipe"):
        build_loader(meta, resolve("f", {"strategy": "full"}, meta), "val", recipe="nope", batch_size=4,
                     image_size=32, seed=0, train=False)


def test_sharded_order_gives_disjoint_shares(dataset) -> None:
    """The per-rank order alone (no processes): train drops the tail evenly, eval covers all unevenly."""
    from types import SimpleNamespace

    from workers.data.loader import _sharded_order_class

    order_cls = _sharded_order_class()
    fake_loader = SimpleNamespace(indices=np.arange(100, 135), seed=5, distributed=False)
    for shuffle, even, sizes in ((True, True, [17, 17]), (False, False, [18, 17])):
        shares = [order_cls(shuffle=shuffle, rank=r, world_size=2, even=even)(fake_loader).sample_order(3)
                  for r in range(2)]
        assert [len(s) for s in shares] == sizes and not set(shares[0]) & set(shares[1])
        union = np.concatenate(shares)
        assert set(union) <= set(range(100, 135)) and len(union) == sum(sizes)
    again = order_cls(shuffle=True, rank=0, world_size=2, even=True)(fake_loader)
    assert not np.array_equal(again.sample_order(3), again.sample_order(4))


@pytest.mark.slow
def test_distributed_ranks_get_disjoint_shares_that_cover_the_subset(dataset, tmp_path: Path) -> None:
    """Two real processes with gloo on the CPU (several nodes/GPUs cannot exist here)."""
    import torch.multiprocessing as tmp_mp

    meta, expected = dataset
    tmp_mp.spawn(distributed_rank_main, args=(2, str(tmp_path / "pg"), str(meta.root), str(tmp_path)), nprocs=2)
    ranks = [np.load(tmp_path / f"rank{r}.npy", allow_pickle=True).item() for r in range(2)]
    manifest = resolve("k3", {"strategy": "uniform", "k": 3}, meta)
    train_idx, remap = manifest.indices["train"], manifest.label_map(meta.num_classes)  # 30 samples
    assert ranks[0]["train_len"] == ranks[1]["train_len"] == [3]  # 15 per rank, batches of 5
    for epoch in ("train0", "train1"):
        a, b = ranks[0][epoch][0], ranks[1][epoch][0]
        assert not set(a) & set(b)
        np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), train_idx)
        for r in range(2):
            ids, labels = ranks[r][epoch]
            np.testing.assert_array_equal(labels, remap[expected["train"][ids]])
    assert not np.array_equal(ranks[0]["train0"][0], ranks[0]["train1"][0])
