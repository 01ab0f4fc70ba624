"""RotNet: every image in 4 rotations, batch 4B, labels 0..3."""

from __future__ import annotations

import torch

from tests.method_helpers import make, views_for
from workers.methods.rotnet import rotate_batch


def test_batch_is_4b_with_labels_0_to_3() -> None:
    x = torch.randn(5, 3, 8, 8)
    images, labels = rotate_batch(x)
    assert images.shape == (20, 3, 8, 8)
    assert labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    torch.testing.assert_close(images[5 + 2], torch.rot90(x[2], 1, dims=(1, 2)))
    torch.testing.assert_close(images[10 + 4], x[4].flip(1).flip(2))  # 180 degrees


def test_backbone_sees_4b_images() -> None:
    m = make("rotnet")
    seen = []
    m.backbone.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[0]))
    loss = m(views_for(m, n=6), torch.zeros(6, dtype=torch.long))
    assert seen == [24] and torch.isfinite(loss) and m.rotation_head.out_features == 4
