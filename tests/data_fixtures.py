"""Shared builders for the data-layer tests (imported by tests/test_data_*.py).

``make_id_folder`` writes an image folder whose every image is one flat colour that encodes the
sample's position in its split (R = id % 256, G = id // 256, B = split marker). Flat images survive
any crop, resize and flip unchanged, so a loader's output tells exactly which samples it read.
"""

from __future__ import annotations

import os
from pathlib import Path

# Tests check behaviour, not speed: LLVM level 0 halves numba's compile time of every new FFCV loader.
# Only effective if numba is not imported yet; spawned test processes inherit it.
os.environ.setdefault("NUMBA_OPT", "0")

import numpy as np
import torch

from workers.data.loader import IMAGENET_MEAN, IMAGENET_STD
from workers.data.synthetic import spread_wnids

SPLIT_MARK = {"train": 40, "val": 200}


def make_id_folder(root: Path, num_classes: int, train_per_class: int, val_per_class: int) -> dict[str, np.ndarray]:
    """Write ``root/{train,val}/<wnid>/NNNN.png``; return each split's expected labels in file order."""
    from PIL import Image

    rng = np.random.default_rng(0)
    wnids = spread_wnids(num_classes)
    labels: dict[str, np.ndarray] = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        sample_id = 0
        for wnid in wnids:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for j in range(per_class):
                h, w = (int(v) for v in rng.integers(20, 48, size=2))
                colour = (sample_id % 256, sample_id // 256, SPLIT_MARK[split])
                Image.fromarray(np.full((h, w, 3), colour, dtype=np.uint8)).save(folder / f"{j:04d}.png")
                sample_id += 1
        labels[split] = np.repeat(np.arange(num_classes), per_class)
    return labels


def decode_ids(view: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(sample ids, split marks) of a normalised flat-colour batch (N x 3 x H x W)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3)
    std = torch.tensor(IMAGENET_STD).view(1, 3)
    centre = view[:, :, view.shape[2] // 2, view.shape[3] // 2].cpu()
    rgb = torch.round((centre * std + mean) * 255).to(torch.int64).numpy()
    return rgb[:, 0] + 256 * rgb[:, 1], rgb[:, 2]


def distributed_rank_main(rank: int, world: int, init_file: str, meta_root: str, out_dir: str) -> None:
    """One rank of the 2-process gloo test: record the sample ids its train and val loaders yield."""
    import torch.distributed as dist

    from subsets import resolve
    from subsets.meta import DatasetMeta
    from workers.data.loader import build_loader

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        meta = DatasetMeta.load(meta_root)
        manifest = resolve("k3", {"strategy": "uniform", "k": 3}, meta)
        train = build_loader(meta, manifest, "train", recipe="eval", batch_size=5, image_size=16, seed=7,
                             train=True, distributed=True, num_workers=1)
        record: dict[str, list] = {"train_len": [len(train)]}
        for epoch in range(2):
            ids, labels = [], []
            for views, lab in train:
                ids.append(decode_ids(views[0])[0])
                labels.append(lab.numpy())
            record[f"train{epoch}"] = [np.concatenate(ids), np.concatenate(labels)]
        np.save(Path(out_dir) / f"rank{rank}.npy", np.array(record, dtype=object), allow_pickle=True)
        dist.barrier()
    finally:
        dist.destroy_process_group()
