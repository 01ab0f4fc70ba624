"""``mocov2``: MoCo v1 with an MLP head, temperature 0.2 and the "aug+" augmentations (Chen et al. 2020b;
facebookresearch/moco ``--mlp --moco-t 0.2 --aug-plus --cos``: the cosine lr is the grid's schedule)."""

from __future__ import annotations

from torch import nn

from workers.methods.mocov1 import MoCoV1


class MoCoV2(MoCoV1):
    name = "mocov2"
    recipe = "mocov2"

    def build_head(self, feat_dim: int, dim: int) -> nn.Module:
        return nn.Sequential(nn.Linear(feat_dim, feat_dim), nn.ReLU(inplace=True), nn.Linear(feat_dim, dim))
