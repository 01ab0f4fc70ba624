"""SimCLR's NT-Xent loss against a per-sample computation from its definition (Chen et al. 2020, eq. 1)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from tests.method_helpers import make, views_for
from workers.methods.simclr import nt_xent


def _nt_xent_by_definition(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """Mean over the 2N anchors of -log(exp(sim(i, pos) / t) / sum over k != i of exp(sim(i, k) / t))."""
    z = F.normalize(torch.cat([z1, z2]), dim=1).tolist()
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = {k: sum(a * b for a, b in zip(z[i], z[k], strict=True)) / t for k in range(2 * n) if k != i}
        total += -math.log(math.exp(sims[pos]) / sum(math.exp(s) for s in sims.values()))
    return total / (2 * n)


def test_nt_xent_is_the_mean_over_both_views_of_the_positive_against_all_others() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    for t in (0.1, 0.5):
        assert math.isclose(float(nt_xent(z1, z2, t)), _nt_xent_by_definition(z1, z2, t), rel_tol=1e-9)
    # identical views far from each other's samples: the loss falls towards 0 as the temperature does
    assert float(nt_xent(torch.eye(3), torch.eye(3), 0.05)) < 1e-6


def test_the_method_loss_is_nt_xent_of_its_projected_views() -> None:
    m = make("simclr", proj_hidden_dim=16, proj_dim=8, temperature=0.3)
    v1, v2 = views_for(m, n=4)[:2]
    loss = m([v1, v2], torch.zeros(4, dtype=torch.long)).detach()
    with torch.no_grad():
        z = m.projector(m.backbone(torch.cat([v1, v2])))  # train-mode BN: the same batch statistics
    assert math.isclose(float(loss), _nt_xent_by_definition(z[:4], z[4:], 0.3), rel_tol=1e-4)
