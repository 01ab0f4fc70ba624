"""DINO: pairs of different views, centering, teacher on global crops only, temperature warm-up, frozen last layer."""

from __future__ import annotations

import torch

from tests.method_helpers import make, views_for
from workers.methods.dino import dino_loss


def test_two_global_six_local_crops_give_14_loss_terms_and_teacher_sees_globals_only() -> None:
    m = make("dino", local_crops=6)
    views = views_for(m, n=4)
    assert len(views) == 8 and views[2].shape[-1] < views[0].shape[-1]
    seen: list[int] = []
    m.teacher_backbone.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[0]))
    loss = m(views, torch.zeros(4, dtype=torch.long))
    assert m.last_terms == 14 and torch.isfinite(loss)
    assert seen == [8]  # the 2 global crops of 4 images


def test_loss_skips_same_view_pairs() -> None:
    s = torch.randn(3 * 2, 5)
    t = torch.randn(2 * 2, 5)
    loss, terms = dino_loss(s, t, torch.zeros(1, 5), 3, 0.1, 0.04)
    assert terms == 4
    s_chunks, t_chunks = s.chunk(3), t.chunk(2)
    manual = 0.0
    for i, tq in enumerate(t_chunks):
        for v, sv in enumerate(s_chunks):
            if v != i:
                manual += (-torch.softmax(tq / 0.04, -1) * torch.log_softmax(sv / 0.1, -1)).sum(-1).mean()
    torch.testing.assert_close(loss, manual / 4)


def test_center_moves_by_the_ema_rule() -> None:
    m = make("dino", local_crops=0)
    m.center.fill_(0.5)
    teacher = torch.randn(6, m.center.shape[1])
    m.update_center(teacher)
    torch.testing.assert_close(m.center, 0.9 * 0.5 + 0.1 * teacher.mean(dim=0, keepdim=True))


def test_teacher_temperature_warm_up() -> None:
    m = make("dino", local_crops=0, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=4)
    temps = []
    for epoch in range(6):
        m.global_step.fill_(epoch * m.steps_per_epoch)
        temps.append(round(m.teacher_temp(), 6))
    assert temps == [0.04, 0.05, 0.06, 0.07, 0.07, 0.07]


def test_last_layer_frozen_in_the_first_epoch_only() -> None:
    m = make("dino", local_crops=0, freeze_last_layer_epochs=1)
    views = views_for(m, n=4)
    m(views, torch.zeros(4, dtype=torch.long)).backward()
    assert m.head.last_weight.grad is not None and float(m.head.last_weight.grad.abs().sum()) == 0.0
    assert float(m.head.mlp[0].weight.grad.abs().sum()) > 0
    m.zero_grad()
    m.global_step.fill_(m.steps_per_epoch)  # epoch 1
    m(views, torch.zeros(4, dtype=torch.long)).backward()
    assert float(m.head.last_weight.grad.abs().sum()) > 0


def test_vit_student_takes_local_crops() -> None:
    m = make("dino", backbone="test_vit", local_crops=2)
    views = views_for(m, n=4)  # 32 px globals, 14 px locals
    loss = m(views, torch.zeros(4, dtype=torch.long))
    assert m.last_terms == 6 and torch.isfinite(loss)  # 2 x (2 + 2) - 2
