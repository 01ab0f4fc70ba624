"""ImageNet-1K class names from timm's offline synset tables (no download)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _info():  # noqa: ANN202 - timm type, imported lazily
    from timm.data import ImageNetInfo

    return ImageNetInfo("imagenet-1k")


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1K wnids in their canonical (sorted) class order."""
    return list(_info().label_names())


def class_name(wnid: str) -> str:
    """Human-readable name of ``wnid`` ("tench, Tinca tinca"), or ``wnid`` itself if it is not a synset."""
    try:
        return str(_info().label_name_to_description(wnid))
    except KeyError:
        return wnid
