"""MoCo v1: momentum key encoder, FIFO queue, positive at index 0, logits against the queue before enqueue."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from tests.method_helpers import make, views_for


def test_queue_holds_the_last_keys_and_positive_is_index_0() -> None:
    m = make("mocov1")
    views = views_for(m)
    queue_before = m.queue.clone()
    captured = {}
    original = m.contrastive_logits

    def spy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        captured["q"], captured["k"] = q.detach(), k.detach()
        captured["queue_at_logits"] = m.queue.clone()
        out = original(q, k)
        captured["logits"] = out.detach()
        return out

    m.contrastive_logits = spy  # type: ignore[method-assign]
    loss = m(views, torch.zeros(8, dtype=torch.long))
    q, k, logits = captured["q"], captured["k"], captured["logits"]
    assert logits.shape == (8, 1 + 32)
    torch.testing.assert_close(logits[:, 0], (q * k).sum(dim=1) / m.hparams.temperature)
    torch.testing.assert_close(captured["queue_at_logits"], queue_before)  # logits before enqueue
    torch.testing.assert_close(logits[:, 1:], q @ queue_before / m.hparams.temperature)
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.zeros(8, dtype=torch.long)), rtol=1e-4, atol=1e-4)
    # the queue now holds exactly this batch's keys at the old pointer, the rest untouched
    torch.testing.assert_close(m.queue[:, :8], k.t())
    torch.testing.assert_close(m.queue[:, 8:], queue_before[:, 8:])
    assert int(m.queue_ptr) == 8
    for _ in range(3):  # 4 batches of 8 fill the 32-entry queue and wrap around
        m(views, torch.zeros(8, dtype=torch.long))
    assert int(m.queue_ptr) == 0


def test_keys_are_normalised_and_unshuffled() -> None:
    m = make("mocov1", bn_splits=1)
    m.eval()  # eval-mode BN: the shuffle must not change which key belongs to which image
    x = views_for(m)[1]
    k = m._encode_keys(x)
    expected = F.normalize(m.key_head(m.key_backbone(x)), dim=1)
    torch.testing.assert_close(k, expected, rtol=1e-4, atol=1e-5)


def test_key_encoder_gets_no_gradient_and_follows_by_momentum() -> None:
    m = make("mocov1")
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    loss = m(views_for(m), torch.zeros(8, dtype=torch.long))
    loss.backward()
    assert all(p.grad is None for p in m.key_backbone.parameters())
    assert all(not p.requires_grad for p in m.key_head.parameters())
    k_before = [p.clone() for p in m.key_head.parameters()]
    opt.step()
    m.after_step(0, 100)
    mom = m.hparams.momentum
    for k0, k, q in zip(k_before, m.key_head.parameters(), m.head.parameters(), strict=True):
        torch.testing.assert_close(k, mom * k0 + (1 - mom) * q)
    assert not torch.equal(m.head.weight, k_before[0])


def test_queue_must_hold_whole_global_batches() -> None:
    m = make("mocov1", queue_size=30)
    with pytest.raises(ValueError, match="multiple of the global batch"):
        m(views_for(m), torch.zeros(8, dtype=torch.long))
