"""The linear-probe protocol: frozen backbone (weights and BN statistics unchanged), head only, resumable."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from specs.backbones import create_backbone
from specs.contract import JobPaths
from specs.job import EvalConfig, JobSpec, TrainConfig
from workers.distributed import DistContext
from workers.linear_probe import build_head, linear_probe

CTX = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def _spec(epochs: int = 30) -> JobSpec:
    return JobSpec(grid="g", dataset_root="/nowhere", dataset_fingerprint="f", subset_name="s", subset={},
                   manifest_hash="m", config_name="c", method="supervised", hparams={}, train=TrainConfig(),
                   eval=EvalConfig(protocols=["knn", "linear"], linear_epochs=epochs, linear_lr=10.0,
                                   linear_batch_size=16), seed=0)


def _batches(n_batches: int, seed: int) -> list:
    """Two classes of 16 px images: dark vs bright, with noise (linearly separable from any features)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, 2, (8,), generator=g)
        x = torch.randn(8, 3, 16, 16, generator=g) * 0.3 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
        out.append(([x], y))
    return out


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


def test_vit_head_has_batchnorm_without_affine() -> None:
    head = build_head(8, 3, vit=True)
    assert isinstance(head[0], torch.nn.BatchNorm1d) and not head[0].affine and head[1].out_features == 3
    assert len(build_head(8, 3, vit=False)) == 1


@pytest.mark.slow
def test_a_stopped_probe_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    backbone = create_backbone("test_resnet", 16)
    train, val = _batches(4, 0), _batches(2, 1)
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
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    torch.manual_seed(123)  # a different head initialisation: the resumed run must load the saved head
    resumed = linear_probe(backbone, train, val, num_classes=2, spec=_spec(), job_dir=tmp_path / "b", ctx=CTX,
                           stop=threading.Event())
    assert resumed == whole
    a = torch.load(JobPaths.of(tmp_path / "a").probe_checkpoint, weights_only=False)
    b = torch.load(ckpt, weights_only=False)
    assert b["epoch"] == 30
    for k, v in a["head"].items():
        torch.testing.assert_close(b["head"][k], v)
