"""kNN evaluation on frozen features: the protocol shared by every method (InstDisc / DINO style)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F


@torch.no_grad()
def extract_features(
    backbone: nn.Module, batches: Iterable[tuple[list[torch.Tensor], torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features and labels of every batch (first view)."""
    feats, labels = [], []
    for views, y in batches:
        feats.append(F.normalize(backbone(views[0]).float(), dim=1).cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_votes(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, *, k: int, temperature: float,
    num_classes: int,
) -> torch.Tensor:
    """Class scores (N x num_classes) of a temperature-weighted vote of the k nearest training features."""
    sim = test_feats @ train_feats.t()
    w, idx = sim.topk(min(k, len(train_labels)), dim=1)
    votes = torch.zeros(sim.shape[0], num_classes)
    return votes.scatter_add_(1, train_labels[idx], (w / temperature).exp())


@torch.no_grad()
def knn_accuracy(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, test_labels: torch.Tensor,
    *, k: int, temperature: float, num_classes: int, chunk: int = 1024,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy of a temperature-weighted kNN vote (cosine similarity)."""
    top1 = top5 = 0
    for start in range(0, len(test_labels), chunk):
        votes = knn_votes(train_feats, train_labels, test_feats[start:start + chunk], k=k, temperature=temperature,
                          num_classes=num_classes)
        pred = votes.topk(min(5, num_classes), dim=1).indices
        y = test_labels[start:start + chunk]
        top1 += int((pred[:, 0] == y).sum())
        top5 += int((pred == y[:, None]).any(dim=1).sum())
    n = max(1, len(test_labels))
    return {"knn_top1": top1 / n, "knn_top5": top5 / n}
