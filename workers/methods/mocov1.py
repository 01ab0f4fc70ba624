"""``mocov1``: momentum contrast (He et al. 2020; facebookresearch/moco ``moco/builder.py``).

A query encoder (backbone + head) and a key encoder that follows it by momentum (constant ``momentum``,
0.999). The logits of a query are ``[q.k+, q.queue] / T`` with the positive at index 0, computed against
the queue *before* this batch's keys are enqueued; the keys of every rank are then gathered and
enqueued (FIFO), so the queue holds the last ``queue_size`` keys of the global batch whatever the rank
count (lightly #1018). ``queue_size`` must be a multiple of the global batch (checked by the grid and
here).

Batch-norm leakage across the positive pair: with several ranks, shuffle-BN as the reference (the key
batch is gathered, permuted by a permutation drawn on rank 0, each rank encodes its share, then the
order is restored). On one process there is no other rank to shuffle with; the documented equivalent is
the reference's single-GPU recipe (its CIFAR demo's SplitBatchNorm): the batch is encoded in
``bn_splits`` sub-batches (BN statistics per sub-batch, as on that many GPUs), the keys after a random
permutation, so a query and its key never share batch statistics of the same sub-batch composition.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workers.methods.base import Method
from workers.methods.collective import broadcast_, gather_no_grad, world_rank


def split_forward(module: nn.Module, x: torch.Tensor, splits: int) -> torch.Tensor:
    """``module`` over ``x`` in ``splits`` sub-batches of at least 2 samples (each with its own BN statistics)."""
    splits = min(splits, x.shape[0] // 2)
    if splits <= 1:
        return module(x)
    return torch.cat([module(c) for c in torch.chunk(x, splits)], dim=0)


class MoCoV1(Method):
    name = "mocov1"
    recipe = "mocov1"

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__(backbone, feat_dim, num_classes, hparams)
        self.head = self.build_head(feat_dim, hparams.dim)
        m = hparams.momentum
        self.key_backbone = self.momentum_copy(self.backbone, m, m)
        self.key_head = self.momentum_copy(self.head, m, m)
        self.register_buffer("queue", F.normalize(torch.randn(hparams.dim, hparams.queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64))

    def build_head(self, feat_dim: int, dim: int) -> nn.Module:
        return nn.Linear(feat_dim, dim)

    def _encode_keys(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised keys of ``x`` by the key encoder, with batch-norm shuffling (module docstring)."""
        world, rank = world_rank()
        key_encoder = nn.Sequential(self.key_backbone, self.key_head)
        with torch.no_grad():
            if world > 1:
                all_x = gather_no_grad(x)
                perm = broadcast_(torch.randperm(all_x.shape[0], device=x.device))
                n = x.shape[0]
                mine = perm.view(world, n)[rank]
                k = F.normalize(key_encoder(all_x[mine]), dim=1)
                all_k = gather_no_grad(k)
                return all_k[torch.argsort(perm)].view(world, n, -1)[rank]
            perm = torch.randperm(x.shape[0], device=x.device)
            k = split_forward(key_encoder, x[perm], self.hparams.bn_splits)
            return F.normalize(k[torch.argsort(perm)], dim=1)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest entries of the queue by ``keys`` of every rank (rank order)."""
        keys = gather_no_grad(keys)
        size, n = self.queue.shape[1], keys.shape[0]
        if size % n:
            raise ValueError(f"mocov1/mocov2: queue_size {size} is not a multiple of the global batch {n}")
        ptr = int(self.queue_ptr)
        self.queue[:, ptr:ptr + n] = keys.t().to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % size)

    def contrastive_logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``[q.k, q.queue] / T``: N x (1 + queue_size), the positive at index 0."""
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ self.queue.clone().detach().to(q.dtype)
        return torch.cat([l_pos, l_neg], dim=1) / self.hparams.temperature

    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        world, _ = world_rank()
        splits = self.hparams.bn_splits if world == 1 else 1
        feats = split_forward(self.backbone, views[0], splits)
        q = F.normalize(self.head(feats), dim=1)
        k = self._encode_keys(views[1])
        logits = self.contrastive_logits(q, k)
        loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        self.enqueue(k)
        return loss + self.probe_loss(feats, labels)
