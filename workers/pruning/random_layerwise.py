"""``random``: a random mask with each layer's density of the given mask (the ``random_prune``
baseline, open_lth's ``randomly_prune`` layerwise). ``prune_fraction`` and ``level`` are unused:
the result keeps exactly as many weights per layer as ``mask`` does."""

from __future__ import annotations

import torch

from workers.pruning.base import PruningStrategy
from workers.pruning.mask import Mask


class RandomLayerwise(PruningStrategy):
    name = "random"

    def prune(self, weights: dict[str, torch.Tensor], mask: Mask, prune_fraction: float, level: int,
              generator: torch.Generator) -> Mask:
        out = {}
        for n, m in mask.items():
            keep = torch.zeros(m.numel(), dtype=torch.bool)
            keep[torch.randperm(m.numel(), generator=generator)[:int(m.sum())]] = True
            out[n] = keep.view_as(m)
        return out
