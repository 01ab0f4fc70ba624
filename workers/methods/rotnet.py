"""``rotnet``: predict the rotation (0/90/180/270 degrees) of each image (Gidaris et al. 2018).

Every image of the batch is shown in its 4 rotations (gidariss/FeatureLearningRotNet ``dataloader.py``):
the batch becomes 4B images with labels 0..3 and the loss a 4-way cross-entropy of a linear head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workers.methods.base import Method


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (B x C x H x W, square) in 4 rotations: (4B images, labels 0..3), rotation-major."""
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)], dim=0)
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels


class RotNet(Method):
    name = "rotnet"
    recipe = "supervised"

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__(backbone, feat_dim, num_classes, hparams)
        self.rotation_head = nn.Linear(feat_dim, 4)

    def rotation_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(4-way cross-entropy over the 4 rotations of ``x``, the features of the unrotated images)."""
        images, targets = rotate_batch(x)
        feats = self.backbone(images)
        return F.cross_entropy(self.rotation_head(feats), targets), feats[: x.shape[0]]

    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        loss, feats = self.rotation_loss(views[0])
        return loss + self.probe_loss(feats, labels)
