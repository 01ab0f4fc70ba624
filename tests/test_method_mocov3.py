"""MoCo v3: BN(affine=False)-ended projector, predictor, symmetric loss scaled by 2T, momentum encoder."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tests.method_helpers import make, views_for
from workers.methods.mocov3 import infonce_2t


def test_projector_and_predictor_shapes() -> None:
    m = make("mocov3")
    last = m.projector[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine
    assert sum(isinstance(x, nn.Linear) for x in m.projector) == 2  # ResNet: 2 layers
    assert not isinstance(m.predictor[-1], nn.BatchNorm1d)  # MoCo_ResNet: _build_mlp(2, ..., False)
    vit = make("mocov3", backbone="test_vit")
    assert sum(isinstance(x, nn.Linear) for x in vit.projector) == 3  # ViT: 3 layers
    # MoCo_ViT: the predictor is _build_mlp(2, dim, mlp_dim, dim), ending in BN without affine like the
    # projector: Linear(bias=False)-BN-ReLU-Linear(bias=False)-BN(affine=False)
    kinds = [type(x) for x in vit.predictor]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert vit.predictor[1].affine and not vit.predictor[-1].affine
    assert vit.predictor[0].bias is None and vit.predictor[3].bias is None
    assert (vit.predictor[0].in_features, vit.predictor[3].out_features) == (16, 16)


def test_symmetric_loss_scaled_by_2t() -> None:
    m = make("mocov3", temperature=0.2)
    views = views_for(m)
    loss = m(views, torch.zeros(8, dtype=torch.long))
    q, k = torch.randn(8, 16), torch.randn(8, 16)
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).t() / 0.2
    torch.testing.assert_close(infonce_2t(q, k, 0.2), F.cross_entropy(logits, torch.arange(8)) * 0.4)
    assert torch.isfinite(loss)


def test_momentum_encoder_gets_no_gradient() -> None:
    m = make("mocov3")
    m(views_for(m), torch.zeros(8, dtype=torch.long)).backward()
    assert all(p.grad is None for p in m.momentum_backbone.parameters())
    assert m.predictor[0].weight.grad is not None and next(m.backbone.parameters()).grad is not None


def test_the_loss_is_symmetric_in_its_two_views() -> None:
    m = make("mocov3", temperature=0.2)
    v1, v2 = views_for(m)[:2]
    labels = torch.zeros(8, dtype=torch.long)
    with torch.no_grad():
        loss_12, loss_21 = m([v1, v2], labels), m([v2, v1], labels)
        torch.testing.assert_close(loss_12, loss_21)  # swapping the views changes nothing
        both = torch.cat([v1, v2])  # train-mode BN: the same batch statistics as inside the method
        q = m.predictor(m.projector(m.backbone(both)))
        k = m.momentum_projector(m.momentum_backbone(both))
        forward, backward = infonce_2t(q[:8], k[8:], 0.2), infonce_2t(q[8:], k[:8], 0.2)
    torch.testing.assert_close(loss_12, forward + backward)  # q1 against k2 plus q2 against k1
    assert abs(float(forward - backward)) > 1e-3  # the two directions differ: one of them alone would fail
