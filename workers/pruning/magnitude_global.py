"""``global``: prune the smallest-magnitude remaining weights over all prunable layers together
(open_lth's ``sparse_global``; Frankle & Carbin's and seed 002's choice)."""

from __future__ import annotations

import torch

from specs.lottery import remaining_target
from workers.pruning.base import PruningStrategy, smallest_kept
from workers.pruning.mask import Mask, count


class GlobalMagnitude(PruningStrategy):
    name = "global"

    def prune(self, weights: dict[str, torch.Tensor], mask: Mask, prune_fraction: float, level: int,
              generator: torch.Generator) -> Mask:
        names = list(mask)
        kept, total = count(mask)
        n_prune = kept - remaining_target(total, prune_fraction, level)
        scores = torch.cat([weights[n].detach().abs().float().flatten().cpu() for n in names])
        keep = smallest_kept(scores, torch.cat([mask[n].flatten() for n in names]), n_prune)
        out, start = {}, 0
        for n in names:
            size = mask[n].numel()
            out[n] = keep[start:start + size].view_as(mask[n])
            start += size
        return out
