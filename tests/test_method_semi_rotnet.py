"""semi_rotnet: a stratified seeded labelled share (by sample index) + RotNet on every image.

The loader's ``batch_indices`` are checked against real .beton files whose every image encodes its own
sample index (tests/data_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from subsets import resolve
from tests.data_fixtures import decode_ids, make_id_folder
from tests.method_helpers import make, views_for
from workers.data.loader import build_loader
from workers.data.write import write_image_folder
from workers.methods.semi_rotnet import labeled_indices


def test_labelled_share_is_stratified_seeded_and_deterministic() -> None:
    indices = np.arange(1000, 1100)
    labels = np.repeat(np.arange(4), 25)
    a = labeled_indices(indices, labels, 0.2, seed=0)
    assert len(a) == 20 and all((labels[np.isin(indices, a)] == c).sum() == 5 for c in range(4))
    np.testing.assert_array_equal(a, labeled_indices(indices[::-1].copy(), labels[::-1].copy(), 0.2, seed=0))
    assert not np.array_equal(a, labeled_indices(indices, labels, 0.2, seed=1))
    assert len(labeled_indices(indices, labels, 0.01, seed=0)) == 4  # at least one per class
    assert len(labeled_indices(indices, labels, 0.0, seed=0)) == 0


def test_cross_entropy_uses_only_the_labelled_images() -> None:
    m = make("semi_rotnet", labeled_fraction=0.25)
    unlabelled = np.setdiff1d(m.loader.indices, m.labeled)
    assert len(m.labeled) == 8  # 25% of 32
    batch = np.concatenate([m.labeled[:3], unlabelled[:5]])
    m.loader.batch_indices = batch
    mask = m.labeled_mask(batch, torch.device("cpu"))
    assert mask.tolist() == [True] * 3 + [False] * 5
    views = views_for(m)
    labels = torch.arange(8) % 4
    base = m(views, labels)
    other = labels.clone()
    other[~mask] = (other[~mask] + 1) % 4
    torch.testing.assert_close(m(views, other), base)
    other = labels.clone()
    other[mask] = (other[mask] + 1) % 4
    assert not torch.allclose(m(views, other), base)


@pytest.fixture(scope="module")
def id_dataset(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("semi_ids")
    make_id_folder(root / "src", 3, 8, 2)
    return write_image_folder(root / "src", root / "ds", write_mode="raw", max_resolution=32, page_size=2**21,
                              num_workers=1, progress=False)


@pytest.mark.slow  # trains, or compiles FFCV pipelines
def test_loader_batch_indices_are_the_samples_it_yields(id_dataset) -> None:  # type: ignore[no-untyped-def]
    meta = id_dataset
    manifest = resolve("full", {"strategy": "full"}, meta)
    loader = build_loader(meta, manifest, "train", recipe="supervised", batch_size=5, image_size=16, seed=4,
                          train=True)
    np.testing.assert_array_equal(np.sort(loader.indices), np.arange(24))
    seen = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for views, labels in loader:
            ids, _ = decode_ids(views[0])
            np.testing.assert_array_equal(loader.batch_indices, ids)
            np.testing.assert_array_equal(loader.sample_labels[np.searchsorted(loader.indices, ids)], labels.numpy())
            seen.append(ids)
    assert len(seen) == 2 * (24 // 5)
