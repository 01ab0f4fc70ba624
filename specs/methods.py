"""Hyperparameters of each training method (torch-free, so the control plane can validate grids).

Adding a method: a dataclass here plus a line in ``METHOD_HPARAMS``, and its implementation in
``workers/methods/<name>.py`` with a line in ``workers/methods/registry.py``. Defaults follow the
reference implementations (see docs/methods.md); the cross-field rules a grid must obey (MAE needs a
ViT, a MoCo queue holds a whole number of global batches) are in :func:`check_method_config`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from specs.base import SpecError

# timm model names of Vision Transformers (patch-token models that MAE can mask)
VIT_NAME = re.compile(r"^(test_)?(vit|deit|deit3|eva|beit)(\d|_|$)", re.IGNORECASE)


def is_vit(backbone: str) -> bool:
    """Whether timm model ``backbone`` is a Vision Transformer (by its name, e.g. ``vit_small_patch16_224``)."""
    return bool(VIT_NAME.match(backbone))


@dataclass(frozen=True)
class SupervisedHparams:
    """Cross-entropy classification of the subset's classes."""

    label_smoothing: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})


@dataclass(frozen=True)
class SimCLRHparams:
    """SimCLR (Chen et al. 2020): NT-Xent over two augmented views."""

    temperature: float = field(default=0.2, metadata={"min": 1e-4})
    proj_hidden_dim: int = field(default=512, metadata={"min": 1})
    proj_dim: int = field(default=128, metadata={"min": 1})


@dataclass(frozen=True)
class MoCoV1Hparams:
    """MoCo v1 (He et al. 2020): momentum key encoder + a FIFO queue of keys; linear head."""

    dim: int = field(default=128, metadata={"min": 1})
    queue_size: int = field(default=65536, metadata={"min": 1})
    momentum: float = field(default=0.999, metadata={"min": 0.0, "max": 1.0})
    temperature: float = field(default=0.07, metadata={"min": 1e-4})
    # one process: keys are shuffled and both encoders run in this many sub-batches (BN statistics per
    # sub-batch, as on several GPUs); several processes: shuffle-BN across ranks (as the reference)
    bn_splits: int = field(default=8, metadata={"min": 1})
    online_probe: bool = False


@dataclass(frozen=True)
class MoCoV2Hparams(MoCoV1Hparams):
    """MoCo v2 (Chen et al. 2020b): v1 + an MLP head, temperature 0.2, "aug+" augmentations."""

    temperature: float = field(default=0.2, metadata={"min": 1e-4})


@dataclass(frozen=True)
class MoCoV3Hparams:
    """MoCo v3 (Chen et al. 2021): no queue; symmetric InfoNCE scaled by 2T; BN-ended projector; predictor."""

    hidden_dim: int = field(default=4096, metadata={"min": 1})
    dim: int = field(default=256, metadata={"min": 1})
    temperature: float = field(default=1.0, metadata={"min": 1e-4})  # ResNet 1.0, ViT 0.2
    momentum: float = field(default=0.99, metadata={"min": 0.0, "max": 1.0})  # cosine to 1
    online_probe: bool = False


@dataclass(frozen=True)
class BYOLHparams:
    """BYOL (Grill et al. 2020): online + EMA target, predictor, no negatives."""

    hidden_dim: int = field(default=4096, metadata={"min": 1})
    dim: int = field(default=256, metadata={"min": 1})
    momentum: float = field(default=0.99, metadata={"min": 0.0, "max": 1.0})  # cosine to 1
    online_probe: bool = False


@dataclass(frozen=True)
class DINOHparams:
    """DINO (Caron et al. 2021): self-distillation with centering, sharpening and multi-crop."""

    out_dim: int = field(default=65536, metadata={"min": 1})
    hidden_dim: int = field(default=2048, metadata={"min": 1})
    bottleneck_dim: int = field(default=256, metadata={"min": 1})
    local_crops: int = field(default=8, metadata={"min": 0})
    student_temp: float = field(default=0.1, metadata={"min": 1e-4})
    teacher_temp: float = field(default=0.04, metadata={"min": 1e-4})  # after warm-up
    warmup_teacher_temp: float = field(default=0.04, metadata={"min": 1e-4})
    warmup_teacher_temp_epochs: int = field(default=0, metadata={"min": 0})
    center_momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    momentum: float = field(default=0.996, metadata={"min": 0.0, "max": 1.0})  # teacher, cosine to 1
    freeze_last_layer_epochs: int = field(default=1, metadata={"min": 0})
    online_probe: bool = False
    # weight decay of the decayed parameters moves from the training key ``weight_decay`` (reference 0.04) to
    # this by a cosine over the optimiser steps (main_dino.py ``wd_schedule``; its ResNet-50 recipe sets
    # it equal to weight_decay, 1e-4); workers/schedule.py
    weight_decay_end: float = field(default=0.4, metadata={"min": 0.0})


@dataclass(frozen=True)
class MAEHparams:
    """MAE (He et al. 2022): mask most patches, reconstruct them with a light decoder (ViT only)."""

    mask_ratio: float = field(default=0.75, metadata={"min": 0.0, "max": 0.99})
    decoder_dim: int = field(default=512, metadata={"min": 1})
    decoder_depth: int = field(default=8, metadata={"min": 1})
    decoder_heads: int = field(default=16, metadata={"min": 1})
    norm_pix_loss: bool = True
    online_probe: bool = False


@dataclass(frozen=True)
class RotNetHparams:
    """RotNet (Gidaris et al. 2018): predict which of 4 rotations (0/90/180/270) an image shows."""

    online_probe: bool = False


@dataclass(frozen=True)
class ExemplarHparams:
    """Exemplar (Dosovitskiy et al. 2014; Kolesnikov et al. 2019): several crops per image, triplet loss."""

    crops: int = field(default=8, metadata={"min": 2})
    dim: int = field(default=1000, metadata={"min": 1})
    margin: float = field(default=0.5, metadata={"min": 0.0})
    online_probe: bool = False


@dataclass(frozen=True)
class SemiRotNetHparams:
    """Semi-supervised: cross-entropy on a stratified seeded share of labelled images + RotNet on all."""

    labeled_fraction: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    rotation_weight: float = field(default=1.0, metadata={"min": 0.0})
    label_seed: int = 0


METHOD_HPARAMS: dict[str, type] = {
    "supervised": SupervisedHparams,
    "simclr": SimCLRHparams,
    "mocov1": MoCoV1Hparams,
    "mocov2": MoCoV2Hparams,
    "mocov3": MoCoV3Hparams,
    "byol": BYOLHparams,
    "dino": DINOHparams,
    "mae": MAEHparams,
    "rotnet": RotNetHparams,
    "exemplar": ExemplarHparams,
    "semi_rotnet": SemiRotNetHparams,
}


# The network the evaluation protocols (kNN, linear probe) extract features with, and the backbone a child
# job starts from (``final_weights.pt``), where it is not the online backbone: DINO's references evaluate
# and publish the teacher (eval_knn.py / eval_linear.py ``--checkpoint_key teacher``). MoCo and BYOL are
# evaluated on the online backbone (the query encoder), as their papers do.
EVAL_NETWORKS: dict[str, str] = {"dino": "teacher"}
NETWORK_WORDS = {"online": "online backbone", "teacher": "teacher (EMA of the student)"}


def eval_network(method: str) -> str:
    """Which network of ``method`` is evaluated: ``"teacher"`` (DINO) or ``"online"`` (every other method)."""
    return EVAL_NETWORKS.get(method, "online")


def eval_network_words(method: str) -> str:
    """:func:`eval_network` in words for the report, e.g. ``teacher (EMA of the student)``."""
    return NETWORK_WORDS[eval_network(method)]


def hparams_class(method: Any) -> type:
    """The hyperparameter dataclass of ``method``; :class:`SpecError` if unknown."""
    if not isinstance(method, str) or method not in METHOD_HPARAMS:
        raise SpecError("method", "one of " + ", ".join(sorted(METHOD_HPARAMS)))
    return METHOD_HPARAMS[method]


def check_method_config(method: str, hparams: dict[str, Any], train: dict[str, Any]) -> None:
    """Rules between a method's hyperparameters and the training keys (``SpecError`` naming the key).

    ``hparams``/``train``: the method table's values (train keys merged over the grid's ``[train]``)."""
    backbone = str(train.get("backbone", "resnet18"))
    patch = int(train.get("patch_size", 0))
    if patch and not is_vit(backbone):
        raise SpecError("patch_size", f"0 (the model's own) for a backbone without patches, got {patch} "
                                      f"for {backbone!r}")
    if patch and int(train.get("image_size", 224)) % patch:
        raise SpecError("patch_size", f"a divisor of image_size {train.get('image_size', 224)} (got {patch})")
    if method == "mae" and not is_vit(backbone):
        raise SpecError("backbone", f"a Vision Transformer for mae (e.g. vit_base_patch16_224), got {backbone!r}")
    if method in ("mocov1", "mocov2"):
        queue = int(hparams.get("queue_size", MoCoV1Hparams.queue_size))
        batch = int(train.get("batch_size", 256))
        if queue % batch:
            raise SpecError("queue_size", f"a multiple of the global batch size {batch} (got {queue})")
