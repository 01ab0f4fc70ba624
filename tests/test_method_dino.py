"""DINO: pairs of different views, centering, teacher on global crops only, temperature warm-up, frozen last layer;
evaluated on the teacher (the network each method is evaluated on), with float32 features."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from specs.backbones import create_backbone
from specs.job import EvalConfig, JobSpec, Resources, TrainConfig
from specs.methods import eval_network
from subsets import DatasetMeta, resolve
from tests.method_helpers import make, views_for
from workers.data.loader import build_loader
from workers.distributed import DistContext
from workers.knn import extract_features, knn_accuracy
from workers.methods.dino import dino_loss
from workers.methods.registry import METHODS
from workers.train import Trainer, build_method, seed_everything

CTX = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def test_two_global_six_local_crops_give_14_loss_terms_and_teacher_sees_globals_only() -> None:
    m = make("dino", local_crops=6)
    views = views_for(m, n=4)
    assert len(views) == 8 and views[2].shape[-1] < views[0].shape[-1]
    seen: list[int] = []
    m.teacher_backbone.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[0]))
    loss = m(views, torch.zeros(4, dtype=torch.long))
    assert m.last_terms == 14 and torch.isfinite(loss)
    assert seen == [8]  # the 2 global crops of 4 images


def test_loss_skips_same_view_pairs() -> None:
    s = torch.randn(3 * 2, 5)
    t = torch.randn(2 * 2, 5)
    loss, terms = dino_loss(s, t, torch.zeros(1, 5), 3, 0.1, 0.04)
    assert terms == 4
    s_chunks, t_chunks = s.chunk(3), t.chunk(2)
    manual = 0.0
    for i, tq in enumerate(t_chunks):
        for v, sv in enumerate(s_chunks):
            if v != i:
                manual += (-torch.softmax(tq / 0.04, -1) * torch.log_softmax(sv / 0.1, -1)).sum(-1).mean()
    torch.testing.assert_close(loss, manual / 4)


def test_center_moves_by_the_ema_rule() -> None:
    m = make("dino", local_crops=0)
    m.center.fill_(0.5)
    teacher = torch.randn(6, m.center.shape[1])
    m.update_center(teacher)
    torch.testing.assert_close(m.center, 0.9 * 0.5 + 0.1 * teacher.mean(dim=0, keepdim=True))


def test_teacher_temperature_warm_up() -> None:
    m = make("dino", local_crops=0, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=4)
    temps = []
    for epoch in range(6):
        m.global_step.fill_(epoch * m.steps_per_epoch)
        temps.append(round(m.teacher_temp(), 6))
    assert temps == [0.04, 0.05, 0.06, 0.07, 0.07, 0.07]


def test_last_layer_frozen_in_the_first_epoch_only() -> None:
    m = make("dino", local_crops=0, freeze_last_layer_epochs=1)
    views = views_for(m, n=4)
    m(views, torch.zeros(4, dtype=torch.long)).backward()
    assert m.head.last_weight.grad is not None and float(m.head.last_weight.grad.abs().sum()) == 0.0
    assert float(m.head.mlp[0].weight.grad.abs().sum()) > 0
    m.zero_grad()
    m.global_step.fill_(m.steps_per_epoch)  # epoch 1
    m(views, torch.zeros(4, dtype=torch.long)).backward()
    assert float(m.head.last_weight.grad.abs().sum()) > 0


def test_vit_student_takes_local_crops() -> None:
    m = make("dino", backbone="test_vit", local_crops=2)
    views = views_for(m, n=4)  # 32 px globals, 14 px locals
    loss = m(views, torch.zeros(4, dtype=torch.long))
    assert m.last_terms == 6 and torch.isfinite(loss)  # 2 x (2 + 2) - 2


def test_every_method_is_evaluated_on_the_network_specs_name() -> None:
    for name in METHODS:
        m = make(name, backbone="test_vit" if name == "mae" else "test_resnet")
        expected = m.teacher_backbone if eval_network(name) == "teacher" else m.backbone
        assert m.eval_backbone() is expected, name
    assert eval_network("dino") == "teacher" and eval_network("byol") == eval_network("mocov3") == "online"


@pytest.mark.slow  # trains, or compiles FFCV pipelines
def test_a_dino_jobs_knn_features_come_from_the_teacher_in_fp32(digits: Path, tmp_path: Path) -> None:
    """Trainer.evaluate on the real digits with training precision bf16: the kNN reads the teacher's features
    (computed with autocast off), never the student's."""
    meta = DatasetMeta.load(digits)
    subset = {"strategy": "full", "fraction": 0.2}
    manifest = resolve("small", subset, meta)
    spec = JobSpec(grid="g", dataset_root=str(digits), dataset_fingerprint=meta.fingerprint, subset_name="small",
                   subset=subset, manifest_hash=manifest.content_hash, config_name="dino", method="dino",
                   hparams={"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "local_crops": 0},
                   train=TrainConfig(backbone="test_resnet", image_size=32, precision="bf16"),
                   eval=EvalConfig(knn_k=10), seed=0, resources=Resources(loader_workers=1))
    seed_everything(0, 0)
    m = build_method(spec, manifest.num_classes)
    with torch.no_grad():  # a student unlike its teacher (as after training)
        for p in m.backbone.parameters():
            p.add_(torch.randn_like(p))
    calls: dict[str, list] = {"teacher": [], "student": []}
    for key, net in (("teacher", m.teacher_backbone), ("student", m.backbone)):
        net.register_forward_hook(lambda _m, inp, out, key=key: calls[key].append(
            (torch.is_autocast_enabled("cpu"), inp[0].dtype, out.dtype)))
    metrics = Trainer(spec, tmp_path, CTX, None, threading.Event()).evaluate(m, meta, manifest)
    assert calls["student"] == [] and calls["teacher"]
    assert set(calls["teacher"]) == {(False, torch.float32, torch.float32)}  # fp32 although precision is bf16

    def loader(split: str):  # type: ignore[no-untyped-def]
        return build_loader(meta, manifest, split, recipe="eval", batch_size=256, image_size=32, seed=0,
                            train=False)

    m.eval()  # as evaluate() had it (it leaves the method in training mode)
    bank, bank_y = extract_features(m.teacher_backbone, loader("train"))
    feats, ys = extract_features(m.teacher_backbone, loader("val"))
    expected = knn_accuracy(bank, bank_y, feats, ys, k=10, temperature=0.07, num_classes=manifest.num_classes)
    assert metrics["knn_top1"] == expected["knn_top1"]


def test_features_are_fp32_inside_a_bf16_autocast_region() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("test_resnet", 32).eval()
    batches = [([torch.randn(8, 3, 32, 32)], torch.arange(8))]
    plain, _ = extract_features(backbone, batches)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside, _ = extract_features(backbone, batches)
        lowered = torch.nn.functional.normalize(backbone(batches[0][0][0]).float(), dim=1)
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)
    assert not torch.equal(lowered, plain)  # what bf16 extraction would have given: a different feature
