"""Checks run by ``launch`` before any job is recorded, for mistakes that would otherwise fail every job.

Local resources: on a GPU machine every rank needs a GPU of its own, so a job cannot ask for more ranks
per node than the local profile offers GPUs (see :mod:`orchestrator.backends.local_slots`).

Backbones: every (backbone, image size) of the grid must build in timm (as the workers build it, with
:func:`specs.backbones.create_backbone`) and map a batch of images of that size to feature vectors.
The check runs on PyTorch's ``meta`` device (shapes only: no weights allocated, nothing computed), so
it takes well under a second per model even for billion-parameter models on a login node; a model that
cannot be built on ``meta`` is tried for real on the CPU before it is refused. A check that passed is
remembered (:mod:`orchestrator.backbone_cache`), so a relaunch imports neither timm nor torch for it.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.backbone_cache import BackboneCache, BackboneKey, timm_version
from orchestrator.grid import GridSpec, method_combinations, split_values
from specs.backbones import create_backbone
from specs.base import SpecError
from specs.job import TrainConfig

log = logging.getLogger(__name__)


def backbone_uses(grid: GridSpec) -> dict[tuple[str, int, int], str]:
    """``(backbone, image_size, patch_size) -> the grid key that chose the backbone``, over every
    configuration."""
    uses: dict[tuple[str, int, int], str] = {}
    for mt in grid.methods.values():
        for combo in method_combinations(mt):
            _, overrides = split_values(mt, combo)
            train = {**grid.train, **overrides}
            backbone = str(train.get("backbone", TrainConfig.backbone))
            size = int(train.get("image_size", TrainConfig.image_size))
            patch = int(train.get("patch_size", TrainConfig.patch_size))
            key = f"methods.{mt.name}.backbone" if "backbone" in overrides else "train.backbone"
            uses.setdefault((backbone, size, patch), key)
    return uses


def _feature_shape(backbone: str, image_size: int, patch_size: int, device: str) -> tuple[tuple[int, ...], int]:
    import torch

    with torch.device(device), torch.no_grad():
        model = create_backbone(backbone, image_size, patch_size)
        out: Any = model(torch.zeros(2, 3, image_size, image_size))
    return tuple(out.shape), int(model.num_features)


def check_backbones(grid: GridSpec, cache: BackboneCache | None = None) -> None:
    """Raise :class:`SpecError` (naming the grid file and key) for a backbone the workers could not train;
    backbones ``cache`` remembers are not built again (default: the workspace's cache)."""
    cache = cache if cache is not None else BackboneCache.in_workspace()
    version = timm_version()
    for (backbone, size, patch), key in backbone_uses(grid).items():
        ck = BackboneKey(backbone, size, patch, version)
        if cache.get(ck) is None:
            cache.put(ck, _check_backbone(grid, key, backbone, size, patch))
        log.debug("backbone %s at %d px: %d features", backbone, size, cache.get(ck))


def _check_backbone(grid: GridSpec, key: str, backbone: str, size: int, patch: int) -> int:
    """Build ``backbone`` (on ``meta``, else the CPU) and return its feature width; :class:`SpecError` if
    it is not a timm model, cannot be built for these images, or does not give feature vectors."""
    import timm

    if not timm.is_model(backbone):
        raise SpecError(key, f"a timm model name (got {backbone!r}; e.g. resnet50, vit_small_patch16_224)",
                        str(grid.path))
    try:
        try:
            shape, width = _feature_shape(backbone, size, patch, "meta")
        except Exception:  # noqa: BLE001  (an op without a meta kernel: build it for real)
            log.debug("%s cannot be built on the meta device; trying the CPU", backbone, exc_info=True)
            shape, width = _feature_shape(backbone, size, patch, "cpu")
    except Exception as exc:  # noqa: BLE001  (whatever timm raises, the user needs one line)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        what = f"{size} px images (train.image_size)" + (f" in {patch} px patches (train.patch_size)"
                                                          if patch else "")
        raise SpecError(key, f"a timm model that takes {what}; "
                             f"{backbone}: {reason}", str(grid.path)) from None
    if shape != (2, width):
        raise SpecError(key, f"a backbone that maps images to feature vectors ({backbone} gives "
                             f"{list(shape)} for 2 images of {size} px)", str(grid.path))
    return width


def check_local_resources(grid: GridSpec, profile: dict[str, Any]) -> None:
    """Raise :class:`SpecError` if the local profile is malformed or a job can never run on this machine."""
    from orchestrator.backends.local_slots import SlotPool

    try:
        pool = SlotPool.for_profile(profile)
    except SpecError as exc:
        key = exc.key.split(".")[-1]
        source = str(grid.path) if key in grid.cluster else f"cluster profile {profile.get('name', '?')}"
        raise exc.in_file(source) from None
    for mt in grid.methods.values():
        own = grid.raw.get("methods", {}).get(mt.name, {}).get("resources", {})
        prefix = f"methods.{mt.name}.resources" if {"nproc_per_node", "gpus_per_node"} & set(own) else "resources"
        try:
            pool.check_fits(mt.resources, f"{prefix}.nproc_per_node")
        except SpecError as exc:
            raise exc.in_file(str(grid.path)) from None
