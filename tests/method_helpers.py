"""Small builders shared by the method tests: a tiny backbone, a method with small heads, fake batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from specs.backbones import create_backbone
from specs.methods import METHOD_HPARAMS
from workers.data.recipes import get_recipe
from workers.methods.base import Method
from workers.methods.registry import METHODS

# small heads so the unit tests run in a second on a CPU
SMALL: dict[str, dict[str, Any]] = {
    "mocov1": {"queue_size": 32, "dim": 16, "bn_splits": 2},
    "mocov2": {"queue_size": 32, "dim": 16, "bn_splits": 2},
    "mocov3": {"hidden_dim": 32, "dim": 16},
    "byol": {"hidden_dim": 32, "dim": 16},
    "dino": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "local_crops": 2},
    "mae": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
    "exemplar": {"crops": 3, "dim": 16},
}


class FakeLoader:
    """What ``Method.attach`` reads from a training loader."""

    def __init__(self, n: int = 32, classes: int = 4, steps: int = 4) -> None:
        self.indices = np.arange(100, 100 + n)
        self.sample_labels = np.arange(n) % classes
        self.batch_indices = self.indices[:8]
        self.steps = steps

    def __len__(self) -> int:
        return self.steps


def make(name: str, backbone: str = "test_resnet", num_classes: int = 4, **overrides: Any) -> Method:
    torch.manual_seed(0)
    b = create_backbone(backbone, 32)
    hp = METHOD_HPARAMS[name](**{**SMALL.get(name, {}), **overrides})
    m = METHODS[name](b, b.num_features, num_classes, hp)
    m.attach(FakeLoader())
    return m


def views_for(method: Method, n: int = 8, size: int = 32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, 3, v.output_size(size), v.output_size(size), generator=g)
            for v in get_recipe(method.recipe).views]
