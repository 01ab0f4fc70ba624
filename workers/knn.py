"""kNN evaluation on frozen features: the protocol shared by every method (InstDisc / DINO style).

Under DDP every rank extracts the features of its own share of the training split (the kNN bank) and of
the validation split. The validation features are gathered on every rank; each rank finds the k nearest
neighbours of every validation image in its share of the bank, and the ranks' candidates are merged into
the global k nearest. The result equals a single process's over the whole bank (up to ties at the k-th
neighbour), at 1/world of the extraction time, without any rank holding the whole bank.

Features are computed in float32 whatever the training precision (autocast is switched off around the
forward, as the references evaluate in fp32): bf16 features would round the similarities the kNN ranks by.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from workers.distributed import DistContext, all_gather_rows


def fp32_forward(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``backbone(images)`` in float32 with autocast switched off (also inside an autocast region)."""
    with torch.autocast(device_type=images.device.type, enabled=False):
        return backbone(images.float()).float()


@torch.no_grad()
def extract_features(
    backbone: nn.Module, batches: Iterable[tuple[list[torch.Tensor], torch.Tensor]],
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 features (:func:`fp32_forward`) and int64 labels of every batch (first view),
    kept on ``device`` (default: where the backbone computes). No batch at all gives empty tensors."""
    feats, labels = [], []
    for views, y in batches:
        f = F.normalize(fp32_forward(backbone, views[0]), dim=1)
        target = device or f.device
        feats.append(f.to(target))
        labels.append(y.to(target, torch.int64))
    if not feats:
        target = device or next(backbone.parameters()).device
        width = int(getattr(backbone, "num_features", 0))
        return torch.zeros(0, width, device=target), torch.zeros(0, dtype=torch.int64, device=target)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def nearest(
    bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, *, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and labels (N x min(k, bank size)) of each query's nearest bank features."""
    w, idx = (queries @ bank.t()).topk(min(k, len(bank_labels)), dim=1)
    return w, bank_labels[idx]


def vote(sims: torch.Tensor, labels: torch.Tensor, *, temperature: float, num_classes: int) -> torch.Tensor:
    """Class scores (N x num_classes): each neighbour votes for its class with weight exp(sim / T)."""
    votes = torch.zeros(sims.shape[0], num_classes, device=sims.device)
    return votes.scatter_add_(1, labels, (sims / temperature).exp())


@torch.no_grad()
def knn_votes(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, *, k: int, temperature: float,
    num_classes: int,
) -> torch.Tensor:
    """Class scores (N x num_classes) of a temperature-weighted vote of the k nearest training features."""
    sims, labels = nearest(train_feats, train_labels, test_feats, k=k)
    return vote(sims, labels, temperature=temperature, num_classes=num_classes)


def _nearest_over_ranks(
    ctx: DistContext, bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, *, k: int,
    bank_total: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global k nearest of ``queries`` (identical on every rank) over every rank's share of the bank
    (``bank_total`` rows in all)."""
    sims, labels = nearest(bank, bank_labels, queries, k=k)
    short = k - sims.shape[1]  # a share smaller than k: pad with neighbours that weigh nothing
    if short:
        sims = torch.cat([sims, sims.new_full((sims.shape[0], short), float("-inf"))], dim=1)
        labels = torch.cat([labels, labels.new_zeros((labels.shape[0], short))], dim=1)
    all_sims = [torch.empty_like(sims) for _ in range(ctx.world_size)]
    all_labels = [torch.empty_like(labels) for _ in range(ctx.world_size)]
    dist.all_gather(all_sims, sims)
    dist.all_gather(all_labels, labels)
    merged_sims, merged_labels = torch.cat(all_sims, dim=1), torch.cat(all_labels, dim=1)
    best, pos = merged_sims.topk(min(k, bank_total), dim=1)
    return best, merged_labels.gather(1, pos)


@torch.no_grad()
def knn_accuracy(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, test_labels: torch.Tensor,
    *, k: int, temperature: float, num_classes: int, chunk: int = 1024, ctx: DistContext | None = None,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy of a temperature-weighted kNN vote (cosine similarity).

    With a distributed ``ctx`` each rank passes its own shares of the bank and the test set (on
    ``ctx.device``) and every rank returns the accuracy over all of them."""
    distributed = ctx is not None and ctx.distributed
    if distributed:
        test_feats, test_labels = all_gather_rows(ctx, test_feats), all_gather_rows(ctx, test_labels)
        bank_total = int(all_gather_rows(ctx, train_labels.new_tensor([len(train_labels)])).sum())
    top1 = top5 = 0
    for start in range(0, len(test_labels), chunk):
        queries = test_feats[start:start + chunk]
        if distributed:
            sims, labels = _nearest_over_ranks(ctx, train_feats, train_labels, queries, k=k, bank_total=bank_total)
        else:
            sims, labels = nearest(train_feats, train_labels, queries, k=k)
        pred = vote(sims, labels, temperature=temperature, num_classes=num_classes)
        pred = pred.topk(min(5, num_classes), dim=1).indices
        y = test_labels[start:start + chunk]
        top1 += int((pred[:, 0] == y).sum())
        top5 += int((pred == y[:, None]).any(dim=1).sum())
    n = max(1, len(test_labels))
    return {"knn_top1": top1 / n, "knn_top5": top5 / n}
