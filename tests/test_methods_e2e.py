"""Every method trains for real on the digits through the Trainer (in-process, one rank, CPU, one short
epoch); ResNet-style tiny backbone for all, a tiny ViT at 32 px for MAE, DINO and MoCo v3.

What is checked, and why it differs between methods: the methods with a label-like signal (supervised,
RotNet, semi-supervised RotNet) must LEARN within the budget: their kNN accuracy after training beats the
same backbone untrained (same initial weights, same data). The self-supervised methods cannot, within a
test budget: a random tiny network is already a good kNN feature extractor on the digits (~72% top-1),
and a few dozen SSL steps from scratch first lower it (SimCLR after 2 epochs of 30% of the digits: 61%).
For them the test checks that training ran end to end (weights moved, finite loss) and that the features
did not collapse: kNN accuracy well above chance (> 3 x 1/10). A collapsed method (constant features, a
dead EMA target, a broken loss sign) fails it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from specs.backbones import create_backbone
from specs.job import EvalConfig, JobSpec, Resources, TrainConfig
from subsets import DatasetMeta, resolve
from workers.data.loader import build_loader
from workers.distributed import DistContext
from workers.knn import extract_features, knn_accuracy
from workers.train import Trainer

CTX = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
SUBSET = {"strategy": "full", "fraction": 0.5}
LEARNS = {"supervised", "rotnet", "semi_rotnet"}  # must beat the untrained backbone
NOT_COLLAPSED = 0.3  # the others: kNN top-1 above 3x chance (10 classes)
EVAL = EvalConfig(knn_k=10)
# (method, backbone, hparams, train overrides): small heads, lr/epochs picked to learn in one short run
RUNS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("supervised", "test_resnet", {}, {}),
    ("simclr", "test_resnet", {"proj_hidden_dim": 128, "proj_dim": 64}, {}),
    ("mocov1", "test_resnet", {"queue_size": 256, "dim": 64, "bn_splits": 4}, {}),
    ("mocov2", "test_resnet", {"queue_size": 256, "dim": 64, "bn_splits": 4}, {}),
    ("byol", "test_resnet", {"hidden_dim": 128, "dim": 64}, {}),
    ("rotnet", "test_resnet", {}, {}),
    ("exemplar", "test_resnet", {"crops": 4, "dim": 64}, {}),
    ("semi_rotnet", "test_resnet", {"labeled_fraction": 0.2}, {}),
    ("mocov3", "test_vit", {"hidden_dim": 128, "dim": 64, "temperature": 0.2}, {"optimizer": "adamw", "lr": 1e-3,
                                                                                "weight_decay": 0.05}),
    ("dino", "test_vit", {"out_dim": 256, "hidden_dim": 128, "bottleneck_dim": 64, "local_crops": 2,
                          "freeze_last_layer_epochs": 0}, {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.04}),
    ("mae", "test_vit", {"decoder_dim": 64, "decoder_depth": 1, "decoder_heads": 2, "mask_ratio": 0.5},
     {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05}),
]


def _spec(digits: Path, meta: DatasetMeta, manifest_hash: str, method: str, backbone: str, hparams: dict[str, Any],
          train: dict[str, Any]) -> JobSpec:
    cfg = TrainConfig(**{"backbone": backbone, "epochs": 1, "batch_size": 64, "lr": 0.05, "image_size": 32,
                         "warmup_epochs": 0, "schedule": "constant", **train})
    return JobSpec(grid="e2e", dataset_root=str(digits), dataset_fingerprint=meta.fingerprint, subset_name="half",
                   subset=SUBSET, manifest_hash=manifest_hash, config_name=method, method=method, hparams=hparams,
                   train=cfg, eval=EVAL, seed=0, resources=Resources(loader_workers=1))


@pytest.fixture(scope="module")
def untrained(digits: Path) -> dict[str, float]:
    """kNN top-1 of each backbone as initialised by the Trainer (seed 0), on the same data."""
    meta = DatasetMeta.load(digits)
    manifest = resolve("half", SUBSET, meta)
    out = {}
    for name in ("test_resnet", "test_vit"):
        torch.manual_seed(0)
        backbone = create_backbone(name, 32).eval()

        def loader(split: str):  # type: ignore[no-untyped-def]
            return build_loader(meta, manifest, split, recipe="eval", batch_size=256, image_size=32, seed=0,
                                train=False)

        bank, bank_y = extract_features(backbone, loader("train"))
        feats, ys = extract_features(backbone, loader("val"))
        out[name] = knn_accuracy(bank, bank_y, feats, ys, k=EVAL.knn_k, temperature=EVAL.knn_temperature,
                                 num_classes=manifest.num_classes)["knn_top1"]
    return out


@pytest.mark.parametrize(("method", "backbone", "hparams", "train"), RUNS, ids=[r[0] for r in RUNS])
def test_method_learns_on_the_digits(digits: Path, untrained: dict[str, float], tmp_path: Path, method: str,
                                     backbone: str, hparams: dict[str, Any], train: dict[str, Any]) -> None:
    meta = DatasetMeta.load(digits)
    manifest = resolve("half", SUBSET, meta)
    spec = _spec(digits, meta, manifest.content_hash, method, backbone, hparams, train)
    metrics = Trainer(spec, tmp_path, CTX, None, threading.Event()).run()
    assert metrics is not None and metrics["epochs"] == 1.0
    if method in LEARNS:
        assert metrics["knn_top1"] > untrained[backbone], (method, metrics["knn_top1"], untrained[backbone])
    else:
        assert metrics["knn_top1"] > NOT_COLLAPSED, (method, metrics["knn_top1"], untrained[backbone])
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    torch.manual_seed(spec.seed)
    initial = create_backbone(backbone, 32).state_dict()
    moved = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, trained[f"backbone.{k}"])]
    assert moved, f"{method}: no backbone weight changed"
