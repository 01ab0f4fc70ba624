"""Backbones are built as the workers train them: ViT-style models for the job's image size."""

from __future__ import annotations

import torch

from specs.backbones import create_backbone


def test_a_vit_is_built_for_the_jobs_image_size_and_trains_there() -> None:
    model = create_backbone("test_vit", 32)  # timm's tiny ViT; natively 160 px
    x = torch.randn(2, 3, 32, 32)
    feats = model(x)
    assert feats.shape == (2, model.num_features)
    feats.sum().backward()  # a real step's gradient reaches the patch embedding
    assert model.patch_embed.proj.weight.grad is not None


def test_models_that_take_any_size_are_built_as_they_are() -> None:
    model = create_backbone("test_resnet", 32)
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, model.num_features)
