"""Exemplar: P crops per image, each image its own class, semi-hard triplet loss with a margin."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from tests.method_helpers import make, views_for
from workers.data.recipes import get_recipe
from workers.methods.exemplar import semihard_triplet_loss


def test_well_separated_instances_have_zero_loss() -> None:
    emb = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]]), dim=1)
    ids = torch.tensor([0, 0, 1, 1])
    assert float(semihard_triplet_loss(emb, ids, margin=0.5)) == 0.0


def _on_circle(*angles: float) -> torch.Tensor:
    return torch.tensor([[math.cos(a), math.sin(a)] for a in angles], dtype=torch.float64)


def _d(angle: float) -> float:
    """Squared Euclidean distance of two unit vectors ``angle`` radians apart."""
    return 2 - 2 * math.cos(angle)


def test_mixed_instances_are_penalised_with_the_margin() -> None:
    emb = F.normalize(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.01], [-1.0, 0.01]], dtype=torch.float64), dim=1)
    ids = torch.tensor([0, 0, 1, 1])  # each image's crops are opposite, the other image's crops are close
    # image 0's pairs: d_ap = 4 and no negative is farther, so the farthest one, d = 2 + 2c (c = 1 / |(1, 0.01)|),
    # is taken; image 1's pairs: d_ap = 2 + 2 * 0.9999 / 1.0001 < 2 + 2c, so that negative is the semi-hard one
    c = 1 / math.sqrt(1.0001)
    d_ap1 = 2 + 2 * 0.9999 / 1.0001
    expected = 0.5 + (4 + d_ap1) / 2 - (2 + 2 * c)
    assert math.isclose(float(semihard_triplet_loss(emb, ids, margin=0.5)), expected, rel_tol=1e-9)


def test_the_semi_hard_negative_is_the_closest_one_farther_than_the_positive() -> None:
    # points on the unit circle at angles 0, 0.2 (image 0) and 0.3, 0.65 (image 1)
    emb = _on_circle(0.0, 0.2, 0.3, 0.65)
    ids = torch.tensor([0, 0, 1, 1])
    # (0 -> 0.2): negatives 0.3 and 0.65 away, both farther than the positive: the closer, d(0.3), not the
    # farthest; (0.2 -> 0): negatives 0.1 and 0.45 away: d(0.45); (0.3 -> 0.65): negatives 0.3 and 0.1 away,
    # none farther than 0.35: the farthest, d(0.3); (0.65 -> 0.3): negatives 0.65 and 0.45 away: d(0.45)
    margin = 0.5
    per_pair = [_d(0.2) - _d(0.3), _d(0.2) - _d(0.45), _d(0.35) - _d(0.3), _d(0.35) - _d(0.45)]
    expected = sum(margin + p for p in per_pair) / 4
    assert math.isclose(float(semihard_triplet_loss(emb, ids, margin=margin)), expected, rel_tol=1e-9)
    # pairs whose semi-hard negative is beyond the margin cost nothing
    assert math.isclose(float(semihard_triplet_loss(emb, ids, margin=0.0)),
                        sum(max(0.0, p) for p in per_pair) / 4, abs_tol=1e-12)


def test_crops_per_image_and_instance_labels() -> None:
    m = make("exemplar", crops=3)
    assert get_recipe(m.recipe).num_views == 3
    seen = []
    m.backbone.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[0]))
    loss = m(views_for(m, n=4), torch.zeros(4, dtype=torch.long))
    assert seen == [12] and torch.isfinite(loss)
