"""Exemplar: P crops per image, each image its own class, semi-hard triplet loss with a margin."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from tests.method_helpers import make, views_for
from workers.data.recipes import get_recipe
from workers.methods.exemplar import semihard_triplet_loss


def test_well_separated_instances_have_zero_loss() -> None:
    emb = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]]), dim=1)
    ids = torch.tensor([0, 0, 1, 1])
    assert float(semihard_triplet_loss(emb, ids, margin=0.5)) == 0.0


def test_mixed_instances_are_penalised_with_the_margin() -> None:
    emb = F.normalize(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.01], [-1.0, 0.01]]), dim=1)
    ids = torch.tensor([0, 0, 1, 1])  # each image's crops are opposite, the other image's crops are close
    d = torch.cdist(emb, emb).pow(2)
    # anchor 0, positive 1: d_ap = 4, no negative is farther -> hardest (farthest) negative d(0, 3) ~ 4
    loss = semihard_triplet_loss(emb, ids, margin=0.5)
    assert float(loss) > 0.4
    assert float(d[0, 1]) > float(d[0, 2])


def test_crops_per_image_and_instance_labels() -> None:
    m = make("exemplar", crops=3)
    assert get_recipe(m.recipe).num_views == 3
    seen = []
    m.backbone.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[0]))
    loss = m(views_for(m, n=4), torch.zeros(4, dtype=torch.long))
    assert seen == [12] and torch.isfinite(loss)
