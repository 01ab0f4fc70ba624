"""Mechanics shared by every method (workers/methods/base.py, workers/schedule.py, specs)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from specs.base import SpecError, from_table
from specs.job import EvalConfig, TrainConfig
from specs.methods import check_method_config, is_vit
from tests.method_helpers import make, views_for
from workers.methods.base import cosine_momentum, ema_update, multi_crop_forward
from workers.schedule import base_lr, build_optimizer, lr_at, optimizer_step


def test_cosine_momentum_endpoints_and_midpoint() -> None:
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(99, 100, 0.996) < 1.0  # not reached early (solo-learn #286)
    assert cosine_momentum(10, 100, 0.9, final=0.9) == pytest.approx(0.9)  # constant (MoCo v1/v2)


def test_after_step_moves_targets_by_the_schedule_and_counts_steps() -> None:
    m = make("byol")
    online, target = m.projector, m.target_projector
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    m.after_step(3, 10)
    tau = cosine_momentum(3, 10, 0.99)
    for t0, t, o in zip(before, target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(t, tau * t0 + (1 - tau) * o)
    assert int(m.global_step) == 4 and m.epoch == 1  # FakeLoader: 4 steps per epoch
    assert "global_step" in m.state_dict()  # checkpointed: a resumed job keeps its schedules


def test_ema_update_rule() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    expect = [0.9 * pb + 0.1 * pa for pa, pb in zip(a.parameters(), b.parameters(), strict=True)]
    ema_update(b, a, 0.9)
    for e, p in zip(expect, b.parameters(), strict=True):
        torch.testing.assert_close(p, e.detach())


def test_multi_crop_forward_one_pass_per_resolution() -> None:
    calls = []
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.register_forward_hook(lambda _m, inp, _o: calls.append(inp[0].shape[0]))
    crops = [torch.randn(4, 3, 32, 32)] * 2 + [torch.randn(4, 3, 16, 16)] * 3
    out = multi_crop_forward(net, crops)
    assert out.shape == (20, 3) and calls == [8, 12]
    torch.testing.assert_close(out[8:12], crops[2].mean(dim=(2, 3)))


def test_online_probe_trains_on_detached_features_only() -> None:
    m = make("rotnet", online_probe=True)
    loss = m(views_for(m), torch.arange(8) % 4)
    m.backbone.zero_grad()
    probe_only = m.probe_loss(m.backbone(views_for(m)[0]), torch.arange(8) % 4)
    probe_only.backward()
    assert all(p.grad is None for p in m.backbone.parameters())
    assert m.online_probe.weight.grad is not None and float(m.online_probe.weight.grad.abs().sum()) > 0
    metrics = m.epoch_metrics()
    assert set(metrics) == {"online_probe_top1"} and 0.0 <= metrics["online_probe_top1"] <= 1.0
    assert torch.isfinite(loss)
    assert make("rotnet").epoch_metrics() == {}  # no probe, no metric


def test_optimisers_from_timm_and_lr_scaling() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    for name in ("lars", "lamb"):
        opt = build_optimizer(model, TrainConfig(optimizer=name, lr=0.5, weight_decay=1e-6))
        assert type(opt).__name__.lower() == name
        decays = sorted(g["weight_decay"] for g in opt.param_groups)
        assert decays == [0.0, 1e-6]  # biases and BN parameters without weight decay
    cfg = TrainConfig(lr=0.3, batch_size=1024, lr_scaling="linear", epochs=2)
    assert base_lr(cfg) == pytest.approx(1.2) and lr_at(cfg, 0, 10) == pytest.approx(1.2)
    assert base_lr(TrainConfig(lr=0.3, batch_size=1024)) == 0.3  # default: no scaling
    assert lr_at(cfg, 10, 10) == pytest.approx(1.2 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_adam_beta2_and_gradient_clipping() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    def betas(**train: Any) -> tuple[float, float]:
        return build_optimizer(model, TrainConfig(**train)).param_groups[0]["betas"]

    assert betas(optimizer="adamw", adam_beta2=0.95) == betas(optimizer="lamb", adam_beta2=0.95) == (0.9, 0.95)
    assert betas(optimizer="adamw") == (0.9, 0.999)
    scaler = torch.amp.GradScaler(enabled=False)
    for clip, expected in ((0.0, 1000.0 * 4), (1.0, 1.0)):  # plain SGD, lr 1: the step is the gradient
        w = nn.Parameter(torch.zeros(16))
        opt = torch.optim.SGD([w], lr=1.0)
        optimizer_step(opt, scaler, (w * 1000.0).sum(), [w], clip)  # gradient 1000 per weight: norm 4000
        assert float(w.detach().norm()) == pytest.approx(expected, rel=1e-5)


def test_eval_protocols_are_validated_and_default_to_knn() -> None:
    assert EvalConfig().protocols == ["knn"]
    assert from_table(EvalConfig, {"protocols": ["knn", "linear"]}, "eval").protocols == ["knn", "linear"]
    for bad in (["svm"], [], ["knn", "knn"]):
        with pytest.raises(SpecError, match="eval.protocols"):
            from_table(EvalConfig, {"protocols": bad}, "eval")


def test_method_config_rules() -> None:
    assert is_vit("vit_small_patch16_224") and is_vit("test_vit") and is_vit("deit_tiny_patch16_224")
    assert not is_vit("resnet50") and not is_vit("test_resnet") and not is_vit("convit_tiny")
    check_method_config("mae", {}, {"backbone": "vit_base_patch16_224"})
    with pytest.raises(SpecError, match="backbone"):
        check_method_config("mae", {}, {"backbone": "resnet50"})
    check_method_config("mocov2", {"queue_size": 4096}, {"batch_size": 256})
    with pytest.raises(SpecError, match="queue_size"):
        check_method_config("mocov1", {"queue_size": 1000}, {"batch_size": 256})


def test_report_names_the_protocol_of_the_ranking_metric() -> None:
    from specs.job import metric_protocol

    assert metric_protocol("linear_top1") == "linear probe on the frozen backbone"
    assert metric_protocol("knn_top1") == "kNN on frozen features"
    assert metric_protocol("val_top1") == "the method's own classifier"
    assert metric_protocol("online_probe_top1") == "online linear probe during training"
