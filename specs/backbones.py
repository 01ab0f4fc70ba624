"""The backbone a job spec names: a timm model, from scratch, built for the job's image size.

Shared by the workers (which train it) and ``launch``'s pre-flight (which builds it on the meta device),
so that both build exactly the same model. timm is imported only when a model is built.
"""

from __future__ import annotations

from typing import Any


def create_backbone(name: str, image_size: int) -> Any:
    """timm model ``name`` without a classifier head (``num_classes=0``), randomly initialised.

    Models with a fixed input size (ViT, DeiT, Swin, ...) are built for ``image_size``, so a ViT trains
    at 160 px as well as at its native 224; models that take any size (ResNet, ConvNeXt, ...) are built
    as they are.
    """
    import timm

    try:
        return timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size)
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise
        return timm.create_model(name, pretrained=False, num_classes=0)
