"""BYOL: predictor on the online side, EMA target without gradient, symmetric 2 - 2cos loss."""

from __future__ import annotations

import torch

from tests.method_helpers import make, views_for
from workers.methods.base import cosine_momentum
from workers.methods.byol import byol_loss


def test_loss_is_two_minus_two_cosine() -> None:
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[3.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(byol_loss(p, z), torch.tensor(1.0))  # (0 + 2) / 2


def test_target_gets_no_gradient_and_follows_cosine_momentum() -> None:
    m = make("byol", momentum=0.9)
    loss = m(views_for(m), torch.zeros(8, dtype=torch.long))
    loss.backward()
    assert all(p.grad is None for p in m.target_backbone.parameters())
    assert m.predictor[0].weight.grad is not None
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
    before = m.target_projector[0].weight.clone()
    opt.step()
    m.after_step(5, 20)
    tau = cosine_momentum(5, 20, 0.9)
    torch.testing.assert_close(m.target_projector[0].weight, tau * before + (1 - tau) * m.projector[0].weight)
    assert 0.9 < tau < 1.0
