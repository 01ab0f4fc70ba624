"""The linear-probe protocol: frozen backbone (weights and BN statistics unchanged), an affine-free batch
norm before every head, a learning rate chosen on held-out TRAINING samples (never on val), resumable,
and not fooled by the scale of the features."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from specs.backbones import create_backbone
from specs.contract import JobPaths
from specs.job import EvalConfig, JobSpec, TrainConfig
from subsets import DatasetMeta, resolve
from workers.data.loader import build_loader
from workers.distributed import DistContext
from workers.linear_probe import LR_FACTORS, build_head, choose_lr, frozen_features, held_out, linear_probe

pytestmark = pytest.mark.slow  # trains models / runs processes

CTX = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The heads are tiny: intra-op threads only add synchronisation (seconds per test on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(epochs: int = 30, lr: float = 10.0, batch: int = 16) -> JobSpec:
    return JobSpec(grid="g", dataset_root="/nowhere", dataset_fingerprint="f", subset_name="s", subset={},
                   manifest_hash="m", config_name="c", method="supervised", hparams={}, train=TrainConfig(),
                   eval=EvalConfig(protocols=["knn", "linear"], linear_epochs=epochs, linear_lr=lr,
                                   linear_batch_size=batch), seed=0)


def _batches(n_batches: int, seed: int) -> list:
    """Two classes of 16 px images: dark vs bright, with noise (linearly separable from any features)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, 2, (8,), generator=g)
        x = torch.randn(8, 3, 16, 16, generator=g) * 0.3 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
        out.append(([x], y))
    return out


@pytest.fixture(scope="module")
def digit_batches(digits: Path) -> dict[str, list]:
    """Half of the real digits (10 classes, ~900 training images), centre crops, as the probe reads them."""
    meta = DatasetMeta.load(digits)
    manifest = resolve("half", {"strategy": "full", "fraction": 0.5}, meta)
    out = {}
    for split in ("train", "val"):
        loader = build_loader(meta, manifest, split, recipe="eval", batch_size=128, image_size=32, seed=0,
                              train=False)
        out[split] = [([v.clone() for v in views], y.clone()) for views, y in loader]
    return out


class Scaled(nn.Module):
    """A backbone whose features are multiplied by a constant."""

    def __init__(self, backbone: nn.Module, factor: float) -> None:
        super().__init__()
        self.backbone, self.factor, self.num_features = backbone, factor, backbone.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) * self.factor


class ValAfterSweep:
    """Validation batches that record at which probe stage they were first read."""

    def __init__(self, batches: list, job_dir: Path) -> None:
        self.batches, self.path, self.stage_seen = batches, JobPaths.of(job_dir).probe_checkpoint, None

    def __iter__(self) -> Iterator[Any]:
        if self.stage_seen is None:
            self.stage_seen = int(torch.load(self.path, weights_only=False)["stage"])
        return iter(self.batches)


@pytest.mark.slow
def test_probe_learns_and_leaves_the_backbone_unchanged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = create_backbone("test_resnet", 16)
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    metrics = linear_probe(backbone, _batches(4, 0), _batches(2, 1), num_classes=2, spec=_spec(), job_dir=tmp_path,
                           ctx=CTX, stop=threading.Event())
    assert metrics is not None and metrics["linear_top1"] > 0.8
    after = backbone.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():  # weights, BN running statistics and num_batches_tracked
        assert torch.equal(v, after[k]), k
    assert all(p.grad is None for p in backbone.parameters())


def test_every_probe_head_starts_with_an_affine_free_batch_norm() -> None:
    head = build_head(8, 3)
    assert isinstance(head[0], nn.BatchNorm1d) and not head[0].affine and head[0].eps == 1e-6
    assert isinstance(head[1], nn.Linear) and head[1].out_features == 3 and len(head) == 2


def test_held_out_part_is_a_fixed_tenth_of_the_training_indices() -> None:
    ids = torch.arange(50_000, 60_000)
    mask = held_out(ids)
    assert 0.08 < float(mask.float().mean()) < 0.12
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    assert torch.equal(held_out(ids[perm]), mask[perm])  # a function of the sample alone: any order, any rank
    assert torch.equal(held_out(ids[1::2]), mask[1::2])


def test_the_lr_is_chosen_on_held_out_training_samples_and_val_is_read_only_at_the_end(
        tmp_path: Path, digit_batches: dict[str, list]) -> None:
    torch.manual_seed(0)
    backbone = create_backbone("test_resnet", 32)
    spec = _spec(epochs=8, lr=0.1, batch=64)
    val = ValAfterSweep(digit_batches["val"], tmp_path)
    metrics = linear_probe(backbone, digit_batches["train"], val, num_classes=10, spec=spec, job_dir=tmp_path,
                           ctx=CTX, stop=threading.Event())
    assert metrics is not None
    grid = [0.1 * f for f in LR_FACTORS]
    state = torch.load(JobPaths.of(tmp_path).probe_checkpoint, weights_only=False)
    scores = state["scores"]
    assert len(scores) == len(grid) and state["stage"] == len(grid)  # every candidate scored, then the final head
    assert val.stage_seen == len(grid)  # val was first read after the sweep, by the final evaluation
    assert metrics["linear_lr"] in grid and metrics["linear_lr"] == choose_lr(grid, scores)
    assert scores[grid.index(metrics["linear_lr"])][0] == max(s[0] for s in scores)
    assert len({round(s[0], 6) for s in scores}) > 1  # the candidates differ: the choice means something
    # a different validation set cannot change the choice
    other = [([v[0].flip(-1)], y) for v, y in digit_batches["val"][:2]]
    (tmp_path / "b").mkdir()
    again = linear_probe(backbone, digit_batches["train"], other, num_classes=10, spec=spec, job_dir=tmp_path / "b",
                         ctx=CTX, stop=threading.Event())
    assert again is not None and again["linear_lr"] == metrics["linear_lr"]
    # scored on held-out samples only: the held-out ones are not among those the candidates trained on
    _, _, ids = frozen_features(backbone, digit_batches["train"], CTX.device)
    assert 0 < int(held_out(ids).sum()) < len(ids) // 5


def test_feature_scale_does_not_move_the_probe(tmp_path: Path, digit_batches: dict[str, list]) -> None:
    torch.manual_seed(0)
    backbone = create_backbone("test_resnet", 32)
    spec = _spec(epochs=8, lr=0.1, batch=64)
    got = {}
    for factor in (1.0, 1000.0):
        job_dir = tmp_path / str(factor)
        job_dir.mkdir()
        got[factor] = linear_probe(Scaled(backbone, factor), digit_batches["train"], digit_batches["val"],
                                   num_classes=10, spec=spec, job_dir=job_dir, ctx=CTX, stop=threading.Event())
    assert got[1.0] is not None and got[1000.0] is not None
    assert got[1.0]["linear_top1"] > 0.5  # random tiny-ResNet features of the digits are informative
    assert abs(got[1.0]["linear_top1"] - got[1000.0]["linear_top1"]) <= 0.02, got
    assert got[1.0]["linear_lr"] == got[1000.0]["linear_lr"]


@pytest.mark.slow
def test_a_stopped_probe_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    backbone = create_backbone("test_resnet", 16)
    train, val = _batches(6, 0), _batches(2, 1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    torch.manual_seed(0)
    whole = linear_probe(backbone, train, val, num_classes=2, spec=_spec(), job_dir=tmp_path / "a", ctx=CTX,
                         stop=threading.Event())
    stop = threading.Event()
    stop.set()
    torch.manual_seed(0)
    assert linear_probe(backbone, train, val, num_classes=2, spec=_spec(), job_dir=tmp_path / "b", ctx=CTX,
                        stop=stop) is None
    ckpt = JobPaths.of(tmp_path / "b").probe_checkpoint
    first = torch.load(ckpt, weights_only=False)
    assert (first["stage"], first["epoch"]) == (0, 1)
    torch.manual_seed(123)  # another global RNG state: the resumed probe must not depend on it
    resumed = linear_probe(backbone, train, val, num_classes=2, spec=_spec(), job_dir=tmp_path / "b", ctx=CTX,
                           stop=threading.Event())
    assert resumed == whole
    a = torch.load(JobPaths.of(tmp_path / "a").probe_checkpoint, weights_only=False)
    b = torch.load(ckpt, weights_only=False)
    assert (b["stage"], b["epoch"]) == (len(LR_FACTORS), 30) and b["scores"] == a["scores"]
    for k, v in a["head"].items():
        torch.testing.assert_close(b["head"][k], v)


def test_choose_lr_breaks_top1_ties_by_held_out_loss() -> None:
    assert choose_lr([0.1, 1.0, 10.0], [[0.9, 0.5], [0.9, 0.3], [0.8, 0.1]]) == 1.0
    assert np.isclose(choose_lr([0.1, 1.0], [[0.5, 1.0], [0.6, 2.0]]), 1.0)
