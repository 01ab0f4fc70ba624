"""``layerwise``: prune the same share of every prunable layer, by magnitude within the layer."""

from __future__ import annotations

import torch

from specs.lottery import remaining_target
from workers.pruning.base import PruningStrategy, smallest_kept
from workers.pruning.mask import Mask


class LayerwiseMagnitude(PruningStrategy):
    name = "layerwise"

    def prune(self, weights: dict[str, torch.Tensor], mask: Mask, prune_fraction: float, level: int,
              generator: torch.Generator) -> Mask:
        out = {}
        for n, m in mask.items():
            n_prune = int(m.sum()) - remaining_target(m.numel(), prune_fraction, level)
            scores = weights[n].detach().abs().float().flatten().cpu()
            out[n] = smallest_kept(scores, m.flatten(), n_prune).view_as(m)
        return out
