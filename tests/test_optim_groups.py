"""Weight decay as the references apply it: AdamW/LARS/LAMB leave 1-D parameters and a ViT's position
embedding and tokens undecayed (timm ``param_groups_weight_decay`` semantics), and DINO's cosine
weight-decay schedule moves only the decayed group."""

from __future__ import annotations

import math

import pytest
import torch

from specs.job import TrainConfig
from specs.methods import DINOHparams
from tests.method_helpers import make
from workers.schedule import DECAYED, build_optimizer, set_weight_decay, weight_decay_at


def _names(model: torch.nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("optimizer", ["adamw", "lars", "lamb"])
def test_biases_norms_position_embedding_and_tokens_are_not_decayed(optimizer: str) -> None:
    m = make("dino", backbone="test_vit", local_crops=0)
    opt = build_optimizer(m, TrainConfig(optimizer=optimizer, lr=1e-3, weight_decay=0.04))
    by = {g[DECAYED]: g for g in opt.param_groups}
    assert by[True]["weight_decay"] == 0.04 and by[False]["weight_decay"] == 0.0
    decayed, free = _names(m, by[True]), _names(m, by[False])
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert decayed | free == trainable and not decayed & free
    assert {"backbone.pos_embed", "backbone.cls_token"} <= free  # timm ViT's no_weight_decay(), 3-D
    assert all(p.ndim >= 2 for n, p in m.named_parameters() if n in decayed)
    assert {n for n, p in m.named_parameters() if p.ndim <= 1 and p.requires_grad} <= free  # biases, norms
    assert "backbone.blocks.0.attn.qkv.weight" in decayed and "backbone.patch_embed.proj.weight" in decayed


def test_adamw_shrinks_only_the_decayed_group() -> None:
    m = make("mae", backbone="test_vit")
    opt = build_optimizer(m, TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5))
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()  # zero gradients: only decoupled weight decay moves a parameter, by the factor 1 - lr * wd
    checked = 0
    for n, p in m.named_parameters():
        if not p.requires_grad or not before[n].abs().sum():  # zero-initialised biases cannot show it
            continue
        decayed = p.ndim >= 2 and n != "backbone.cls_token"  # MAE's mask token is decayed, as in MAE
        expected = before[n] * (1 - 0.1 * 0.5) if decayed else before[n]
        torch.testing.assert_close(p.detach(), expected, msg=n)
        checked += 1
    assert checked > 10 and not m.backbone.pos_embed.requires_grad  # MAE's is fixed: in no group


def test_dino_weight_decay_follows_the_reference_cosine_and_spares_the_undecayed_group() -> None:
    assert DINOHparams().weight_decay_end == 0.4  # main_dino.py: --weight_decay 0.04 --weight_decay_end 0.4
    total = 1000
    assert weight_decay_at(0.04, 0.4, 0, total) == pytest.approx(0.04)
    last = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * (total - 1) / total))  # utils.cosine_scheduler
    assert weight_decay_at(0.04, 0.4, total - 1, total) == pytest.approx(last) and last == pytest.approx(0.4, abs=1e-5)
    values = [weight_decay_at(0.04, 0.4, s, total) for s in range(total)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    m = make("dino", backbone="test_vit", local_crops=0)
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.04)
    opt = build_optimizer(m, cfg)
    set_weight_decay(opt, cfg, 0.4, total // 2, total)
    by = {g[DECAYED]: g["weight_decay"] for g in opt.param_groups}
    assert by == {True: pytest.approx(0.22), False: 0.0}
    set_weight_decay(opt, cfg, None, total - 1, total)  # no schedule: untouched
    assert {g[DECAYED]: g["weight_decay"] for g in opt.param_groups} == by
