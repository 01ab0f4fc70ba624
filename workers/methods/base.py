"""The base of every training method: a backbone, a training loss, and method-specific evaluation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn


class Method(nn.Module, ABC):
    """A training method around a feature backbone (``backbone(x) -> N x feat_dim``).

    Subclasses live one per file in ``workers/methods/`` and are listed in ``registry.py``.
    ``recipe`` names the augmentation recipe of the training loader (``workers.data.recipes``).
    """

    name: ClassVar[str]
    recipe: ClassVar[str]

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__()
        self.backbone, self.feat_dim, self.num_classes, self.hparams = backbone, feat_dim, num_classes, hparams

    @abstractmethod
    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The loss of one batch (``views``: the recipe's augmented views of the same images)."""

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return self.training_loss(views, labels)

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[list[torch.Tensor], torch.Tensor]]) -> dict[str, float]:
        """Method-specific metrics on the validation batches (e.g. top-1 of a classifier head)."""
        return {}
