"""The backbone a job spec names: a timm model, from scratch, built for the job's image size.

Shared by the workers (which train it) and ``launch``'s pre-flight (which builds it on the meta device),
so that both build exactly the same model. timm is imported only when a model is built.
"""

from __future__ import annotations

from typing import Any


def create_backbone(name: str, image_size: int, patch_size: int = 0) -> Any:
    """timm model ``name`` without a classifier head (``num_classes=0``), randomly initialised.

    Models with a fixed input size (ViT, DeiT, Swin, ...) are built for ``image_size``, so a ViT trains
    at 160 px as well as at its native 224; models that take any size (ResNet, ConvNeXt, ...) are built
    as they are. ``patch_size`` > 0 gives a ViT patches of that many pixels instead of its own (e.g. 4 px
    patches for 32 px images, as CIFAR ViTs have: 64 tokens, where 16 px patches would leave 4).
    """
    import timm

    extra = {"patch_size": patch_size} if patch_size else {}
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size, **extra)
    except TypeError as exc:
        if "img_size" not in str(exc) or extra:
            raise
        return timm.create_model(name, pretrained=False, num_classes=0)


def backbone_of(train: Any) -> Any:
    """The backbone a job's ``TrainConfig`` names, built as the workers build it."""
    return create_backbone(train.backbone, train.image_size, train.patch_size)
