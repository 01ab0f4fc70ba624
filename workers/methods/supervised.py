"""``supervised``: cross-entropy classification of the subset's classes with a linear head."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workers.methods.base import Method


@torch.no_grad()
def head_top1(backbone: nn.Module, head: nn.Module, batches: Iterable[tuple[list[torch.Tensor], torch.Tensor]]
              ) -> dict[str, float]:
    """``val_top1``: top-1 accuracy of ``head`` on ``backbone``'s features of the first view."""
    correct = total = 0
    for views, labels in batches:
        pred = head(backbone(views[0])).argmax(dim=1)
        correct += int((pred == labels).sum())
        total += int(labels.numel())
    return {"val_top1": correct / max(1, total)}


class Supervised(Method):
    name = "supervised"
    recipe = "supervised"

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__(backbone, feat_dim, num_classes, hparams)
        self.head = nn.Linear(feat_dim, num_classes)

    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(views[0]))
        return F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[list[torch.Tensor], torch.Tensor]]) -> dict[str, float]:
        return head_top1(self.backbone, self.head, batches)
