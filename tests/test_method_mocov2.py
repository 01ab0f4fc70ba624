"""MoCo v2: v1 with an MLP head, T = 0.2 and the "aug+" recipe."""

from __future__ import annotations

import torch
from torch import nn

from specs.methods import MoCoV1Hparams, MoCoV2Hparams
from tests.method_helpers import make, views_for
from workers.data.recipes import get_recipe


def test_mlp_head_temperature_and_recipe() -> None:
    assert MoCoV2Hparams().temperature == 0.2 and MoCoV1Hparams().temperature == 0.07
    assert MoCoV2Hparams().queue_size == 65536 and MoCoV2Hparams().momentum == 0.999
    m = make("mocov2")
    layers = [type(x) for x in m.head]
    assert layers == [nn.Linear, nn.ReLU, nn.Linear] and m.head[0].out_features == m.feat_dim
    assert isinstance(make("mocov1").head, nn.Linear)
    assert m.recipe == "mocov2" and get_recipe(m.recipe).views[0].scale == (0.2, 1.0)
    loss = m(views_for(m), torch.zeros(8, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss) and m.head[0].weight.grad is not None
