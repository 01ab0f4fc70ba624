"""``exemplar``: every image is its own class, seen through ``crops`` augmented crops (Dosovitskiy et al.
2014), in the triplet-loss form of "Revisiting self-supervised visual representation learning"
(Kolesnikov et al. 2019; google/revisiting-self-supervised ``self_supervision/exemplar.py``).

Why triplet and not instance classification: instance classification needs one output (and one
classifier row to train) per training image, which on ImageNet is a 1.28M-way layer that sees each row
once an epoch; its cost and result depend on the subset size, which is exactly what the lottery studies
vary. The triplet form works inside the batch: the crops of the same image are positives, the crops of
the other images negatives; its cost is independent of the dataset size. Loss: for every
(anchor, positive) pair, ``relu(d(a, p) - d(a, n) + margin)`` with the semi-hard negative (the closest
negative farther than the positive; the farthest negative if none is), squared Euclidean distances of
L2-normalised ``dim``-d embeddings, averaged over pairs (TF ``triplet_semihard_loss``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.methods.base import Method


def semihard_triplet_loss(emb: torch.Tensor, ids: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean semi-hard triplet loss of embeddings ``emb`` (N x d, L2-normalised) with instance ids ``ids``."""
    d = torch.cdist(emb, emb).pow(2)
    same = ids[:, None] == ids[None, :]
    eye = torch.eye(len(ids), dtype=torch.bool, device=emb.device)
    pos_pairs = same & ~eye  # (anchor, positive)
    neg = ~same  # N x N: j is a negative of anchor i
    big = d.max().detach() + 1.0
    # for each (a, p): d(a, n) over negatives, N x N x N would be large; loop over positive pairs in bulk
    a_idx, p_idx = pos_pairs.nonzero(as_tuple=True)
    d_ap = d[a_idx, p_idx]
    d_an = d[a_idx]  # P x N
    negs = neg[a_idx]
    farther = negs & (d_an > d_ap[:, None])
    semi = torch.where(farther, d_an, big).min(dim=1).values
    hardest = torch.where(negs, d_an, -big).max(dim=1).values
    chosen = torch.where(farther.any(dim=1), semi, hardest)
    return torch.relu(d_ap - chosen + margin).mean()


class Exemplar(Method):
    name = "exemplar"

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__(backbone, feat_dim, num_classes, hparams)
        self.recipe = f"exemplar:{hparams.crops}"
        self.embed = nn.Linear(feat_dim, hparams.dim)

    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        n = views[0].shape[0]
        feats = self.backbone(torch.cat(views, dim=0))
        emb = nn.functional.normalize(self.embed(feats), dim=1)
        ids = torch.arange(n, device=emb.device).repeat(len(views))
        return semihard_triplet_loss(emb, ids, self.hparams.margin) + self.probe_loss(feats[:n], labels)
