"""``byol``: bootstrap your own latent (Grill et al. 2020; lightly ``benchmarks/imagenet/resnet50/byol.py``).

Online network = backbone + projector + predictor; target network = an EMA of backbone + projector
(cosine schedule from ``momentum`` to 1, on the base). Loss: ``2 - 2 cos(p, z')`` for both view orders
(symmetrised, averaged over the batch); no negatives.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workers.methods.base import Method, mlp


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean of ``2 - 2 cos(p_i, z_i)``."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


class BYOL(Method):
    name = "byol"
    recipe = "byol"

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__(backbone, feat_dim, num_classes, hparams)
        h, d = hparams.hidden_dim, hparams.dim
        self.projector = mlp(feat_dim, h, d)
        self.predictor = mlp(d, h, d)
        self.target_backbone = self.momentum_copy(self.backbone, hparams.momentum)
        self.target_projector = self.momentum_copy(self.projector, hparams.momentum)

    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        n = views[0].shape[0]
        both = torch.cat(views[:2], dim=0)
        feats = self.backbone(both)
        p = self.predictor(self.projector(feats))
        with torch.no_grad():
            z = self.target_projector(self.target_backbone(both))
        loss = byol_loss(p[:n], z[n:]) + byol_loss(p[n:], z[:n])
        return loss + self.probe_loss(feats[:n], labels)
