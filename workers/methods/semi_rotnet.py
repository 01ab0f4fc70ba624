"""``semi_rotnet``: the semi-supervised ticket-generation task (limited-supervision lottery tickets):
cross-entropy on the labelled share of the images plus RotNet on all of them.

The labelled share is a stratified, seeded function of the sample indices: in every class of the
subset's training split, ``round(labeled_fraction x n_class)`` images (at least one when the fraction is
positive) drawn with ``label_seed``. It does not depend on the batch, rank count or epoch; the worker
knows each batch's sample indices from the loader (``SubsetLoader.batch_indices``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from workers.methods.rotnet import RotNet
from workers.methods.supervised import head_top1


def labeled_indices(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The sorted dataset indices of the labelled share: per class ``round(fraction x n)`` (>= 1 if > 0)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.sort(indices[labels == c])
        n = int(round(fraction * len(members)))
        if fraction > 0:
            n = max(1, n)
        chosen.append(rng.permutation(members)[:n])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


class SemiRotNet(RotNet):
    name = "semi_rotnet"
    recipe = "supervised"

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__(backbone, feat_dim, num_classes, hparams)
        self.head = nn.Linear(feat_dim, num_classes)
        self.labeled: np.ndarray | None = None

    def attach(self, loader: Any) -> None:
        super().attach(loader)
        self.labeled = labeled_indices(np.asarray(loader.indices), np.asarray(loader.sample_labels),
                                       self.hparams.labeled_fraction, self.hparams.label_seed)

    def labeled_mask(self, batch_indices: np.ndarray, device: torch.device) -> torch.Tensor:
        """Which samples of the batch (by dataset index) belong to the labelled share."""
        if self.labeled is None:
            raise RuntimeError("semi_rotnet needs the training loader (attach) to know the labelled share")
        return torch.as_tensor(np.isin(batch_indices, self.labeled), device=device)

    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        rot, feats = self.rotation_loss(views[0])
        mask = self.labeled_mask(self.loader.batch_indices, labels.device)
        # sum over the labelled samples / batch size: every labelled image weighs the same in every batch
        ce = F.cross_entropy(self.head(feats[mask]), labels[mask], reduction="sum") / labels.shape[0]
        return ce + self.hparams.rotation_weight * rot

    @torch.no_grad()
    def evaluate(self, batches: Any) -> dict[str, float]:
        return head_top1(self.backbone, self.head, batches)
