"""``simclr``: contrastive learning of two augmented views with the NT-Xent loss (Chen et al. 2020).

Under DDP the negatives of every rank are gathered (with gradients) so the effective batch is global.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from workers.methods.base import Method


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank, keeping gradients (identity outside DDP)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over a batch of positive pairs ``(z1[i], z2[i])``; all other samples are negatives."""
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class SimCLR(Method):
    name = "simclr"
    recipe = "simclr"

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__(backbone, feat_dim, num_classes, hparams)
        self.projector = nn.Sequential(
            nn.Linear(feat_dim, hparams.proj_hidden_dim),
            nn.BatchNorm1d(hparams.proj_hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hparams.proj_hidden_dim, hparams.proj_dim),
        )

    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        n = views[0].shape[0]
        z = self.projector(self.backbone(torch.cat(views[:2], dim=0)))
        z1, z2 = gather_with_grad(z[:n]), gather_with_grad(z[n:])
        return nt_xent(z1, z2, self.hparams.temperature)
