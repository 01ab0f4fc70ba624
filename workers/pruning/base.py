"""The base of every pruning strategy: the current mask + the weights -> the next level's mask."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from workers.pruning.mask import Mask


class PruningStrategy(ABC):
    """One strategy per file in ``workers/pruning/``, listed in ``registry.py``."""

    name: ClassVar[str]

    @abstractmethod
    def prune(self, weights: dict[str, torch.Tensor], mask: Mask, prune_fraction: float, level: int,
              generator: torch.Generator) -> Mask:
        """The mask of ``level`` (>= 1) from the mask of ``level - 1`` (``mask``) and the trained
        ``weights`` (same names). Only weights kept by ``mask`` may be kept."""


def smallest_kept(scores: torch.Tensor, keep: torch.Tensor, n_prune: int) -> torch.Tensor:
    """A copy of ``keep`` (flat bool) without the ``n_prune`` kept entries of lowest ``scores``.

    Ties are broken by position (a stable sort), so the count is exact and the choice deterministic."""
    out = keep.clone()
    if n_prune <= 0:
        return out
    kept_idx = torch.nonzero(keep, as_tuple=False).flatten()
    order = torch.sort(scores[kept_idx], stable=True).indices
    out[kept_idx[order[:n_prune]]] = False
    return out
