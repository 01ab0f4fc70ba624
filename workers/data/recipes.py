"""Augmentation recipes: name -> :class:`Recipe` (a tuple of views, each a crop plus batched ops).

Every view is decoded separately by FFCV from the same sample (crop and flip happen in FFCV's JIT
pipeline, per sample, :mod:`workers.data.keyed_crop`); the view's ``ops`` then run on the decoded float
batch on the batch's device (:mod:`workers.data.augment`). Every draw is keyed by (job seed, epoch, view,
sample index), so a job's augmentations repeat exactly (:mod:`workers.data.draws`). Parameters follow
the papers, for 224-pixel crops:

- ``eval``: resize + centre crop (crop = 224/256 of the shorter side), no flip.
- ``supervised``: random resized crop (0.08-1) + flip.
- ``simclr`` (Chen et al. 2020): 2 views; crop 0.08-1, flip, colour jitter (0.8, 0.8, 0.8, 0.2) p=0.8,
  grayscale p=0.2, blur p=0.5.
- ``mocov2`` (Chen et al. 2020b): 2 views; crop 0.2-1, colour jitter (0.4, 0.4, 0.4, 0.1) p=0.8,
  grayscale p=0.2, blur p=0.5, flip.
- ``byol`` (Grill et al. 2020): 2 asymmetric views; crop 0.08-1, flip, colour jitter
  (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2, blur p=1.0 / 0.1, solarisation p=0 / 0.2.
- ``mocov1`` (He et al. 2020): 2 views; crop 0.2-1, grayscale p=0.2, colour jitter (0.4, 0.4, 0.4, 0.4)
  always, flip.
- ``mae`` (He et al. 2022): crop 0.2-1 + flip.
- ``exemplar:N`` (Dosovitskiy et al. 2014; Kolesnikov et al. 2019): N crops (0.2-1), flip, colour jitter
  (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.66; ``exemplar`` has 8.
- ``dino`` (Caron et al. 2021): 2 global crops (0.4-1) as BYOL's two views, plus N local crops
  (0.05-0.4, 96/224 of the global size, blur p=0.5); ``dino`` has 8 local crops, ``dino:N`` has N.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from workers.data.augment import ColorJitter, GaussianBlur, RandomGrayscale, Solarize
from workers.data.draws import SampleDraws

EVAL_CROP_RATIO = 224 / 256
DEFAULT_DINO_LOCAL_CROPS = 8
DEFAULT_EXEMPLAR_CROPS = 8


class BatchOp(Protocol):
    def __call__(self, x: torch.Tensor, draws: SampleDraws) -> torch.Tensor: ...


@dataclass(frozen=True)
class ViewSpec:
    """One view: how FFCV crops it, its size relative to ``image_size``, and the batched ops after."""

    crop: str = "random"  # "random": random resized crop; "center": resize + centre crop
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    size_ratio: float = 1.0
    flip: bool = True
    ops: tuple[BatchOp, ...] = ()

    def output_size(self, image_size: int) -> int:
        return max(1, round(image_size * self.size_ratio))


@dataclass(frozen=True)
class Recipe:
    """A named augmentation recipe: the views every sample is turned into."""

    name: str
    views: tuple[ViewSpec, ...]

    @property
    def num_views(self) -> int:
        return len(self.views)


def _ssl_colour(jitter: tuple[float, float, float, float], blur_p: float, solarize_p: float = 0.0,
                ref_size: int = 224) -> tuple[BatchOp, ...]:
    ops: list[BatchOp] = [ColorJitter(*jitter, p=0.8), RandomGrayscale(p=0.2)]
    if blur_p > 0:
        ops.append(GaussianBlur(p=blur_p, ref_size=ref_size))
    if solarize_p > 0:
        ops.append(Solarize(p=solarize_p))
    return tuple(ops)


def _eval() -> Recipe:
    return Recipe("eval", (ViewSpec(crop="center", flip=False),))


def _supervised() -> Recipe:
    return Recipe("supervised", (ViewSpec(),))


def _simclr() -> Recipe:
    view = ViewSpec(ops=_ssl_colour((0.8, 0.8, 0.8, 0.2), blur_p=0.5))
    return Recipe("simclr", (view, view))


def _mocov2() -> Recipe:
    view = ViewSpec(scale=(0.2, 1.0), ops=_ssl_colour((0.4, 0.4, 0.4, 0.1), blur_p=0.5))
    return Recipe("mocov2", (view, view))


def _mocov1() -> Recipe:
    view = ViewSpec(scale=(0.2, 1.0), ops=(RandomGrayscale(p=0.2), ColorJitter(0.4, 0.4, 0.4, 0.4, p=1.0)))
    return Recipe("mocov1", (view, view))


def _mae() -> Recipe:
    return Recipe("mae", (ViewSpec(scale=(0.2, 1.0)),))


def _exemplar(crops: int = DEFAULT_EXEMPLAR_CROPS) -> Recipe:
    view = ViewSpec(scale=(0.2, 1.0), ops=(ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), RandomGrayscale(p=0.66)))
    return Recipe("exemplar" if crops == DEFAULT_EXEMPLAR_CROPS else f"exemplar:{crops}", (view,) * crops)


_BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)


def _byol() -> Recipe:
    return Recipe("byol", (
        ViewSpec(ops=_ssl_colour(_BYOL_JITTER, blur_p=1.0)),
        ViewSpec(ops=_ssl_colour(_BYOL_JITTER, blur_p=0.1, solarize_p=0.2)),
    ))


def _dino(local_crops: int = DEFAULT_DINO_LOCAL_CROPS) -> Recipe:
    glob = (0.4, 1.0)
    local = ViewSpec(scale=(0.05, 0.4), size_ratio=96 / 224, ops=_ssl_colour(_BYOL_JITTER, 0.5, ref_size=96))
    views = (
        ViewSpec(scale=glob, ops=_ssl_colour(_BYOL_JITTER, blur_p=1.0)),
        ViewSpec(scale=glob, ops=_ssl_colour(_BYOL_JITTER, blur_p=0.1, solarize_p=0.2)),
        *([local] * local_crops),
    )
    name = "dino" if local_crops == DEFAULT_DINO_LOCAL_CROPS else f"dino:{local_crops}"
    return Recipe(name, views)


RECIPES: dict[str, Callable[..., Recipe]] = {
    "eval": _eval,
    "supervised": _supervised,
    "simclr": _simclr,
    "mocov1": _mocov1,
    "mocov2": _mocov2,
    "mae": _mae,
    "exemplar": _exemplar,
    "byol": _byol,
    "dino": _dino,
}


def recipe_names() -> list[str]:
    return sorted(RECIPES)


_COUNTED = {"dino": "a number of local crops", "exemplar": "a number of crops"}


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name``; ``dino:N`` is DINO with N local crops (N >= 0), ``exemplar:N``
    Exemplar with N crops."""
    base, _, arg = name.partition(":")
    if base not in RECIPES or (arg and base not in _COUNTED):
        raise ValueError(f"recipe: expected one of {', '.join(recipe_names())} (or dino:N, exemplar:N), "
                         f"got {name!r}")
    if not arg:
        return RECIPES[base]()
    if not arg.isdigit():
        raise ValueError(f"recipe: expected {base}:N with N {_COUNTED[base]}, got {name!r}")
    return RECIPES[base](int(arg))
