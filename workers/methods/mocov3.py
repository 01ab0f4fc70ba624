"""``mocov3``: MoCo v3 (Chen et al. 2021; facebookresearch/moco-v3 ``moco/builder.py``).

No queue: the keys of the other view in the global batch are the negatives. Base encoder = backbone +
projector (ResNet: 2 layers, ViT: 3 layers; hidden ``hidden_dim``, out ``dim``, ending in
BatchNorm1d(affine=False)); a predictor (2 layers) on top for the queries, ending in
BatchNorm1d(affine=False) for a ViT and without it for a ResNet (reference ``MoCo_ViT`` /
``MoCo_ResNet._build_projector_and_predictor_mlps``: ``_build_mlp(2, dim, mlp_dim, dim)`` vs
``..., False)``); a momentum encoder (backbone + projector) moved by the cosine schedule from
``momentum`` to 1. The loss is symmetric, ``CE(q1 k2 / T) + CE(q2 k1 / T)`` with targets
``arange(N) + N x rank``, each scaled by ``2T``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workers.methods.base import Method, mlp
from workers.methods.collective import gather_no_grad, world_rank


def infonce_2t(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo v3's contrastive loss of queries ``q`` against the keys of the global batch, scaled by 2T."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    keys = gather_no_grad(k)
    _, rank = world_rank()
    logits = q @ keys.t() / temperature
    targets = torch.arange(q.shape[0], device=q.device) + q.shape[0] * rank
    return F.cross_entropy(logits, targets) * (2 * temperature)


class MoCoV3(Method):
    name = "mocov3"
    recipe = "byol"  # the reference uses BYOL's asymmetric augmentations

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__(backbone, feat_dim, num_classes, hparams)
        vit = hasattr(backbone, "patch_embed")  # a timm ViT: 3-layer projector, as the reference
        h, d = hparams.hidden_dim, hparams.dim
        self.projector = mlp(feat_dim, h, d, layers=3 if vit else 2, last_bn=True)
        self.predictor = mlp(d, h, d, layers=2, last_bn=vit)
        self.momentum_backbone = self.momentum_copy(self.backbone, hparams.momentum)
        self.momentum_projector = self.momentum_copy(self.projector, hparams.momentum)

    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        n = views[0].shape[0]
        feats = self.backbone(torch.cat(views[:2], dim=0))
        q = self.predictor(self.projector(feats))
        with torch.no_grad():
            k = self.momentum_projector(self.momentum_backbone(torch.cat(views[:2], dim=0)))
        t = self.hparams.temperature
        loss = infonce_2t(q[:n], k[n:], t) + infonce_2t(q[n:], k[:n], t)
        return loss + self.probe_loss(feats[:n], labels)
