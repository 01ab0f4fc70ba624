"""Method name -> implementation. Adding a method: one file in this package plus one line here
(and its hyperparameter dataclass in ``specs/methods.py``)."""

from __future__ import annotations

from workers.methods.base import Method
from workers.methods.byol import BYOL
from workers.methods.dino import DINO
from workers.methods.exemplar import Exemplar
from workers.methods.mae import MAE
from workers.methods.mocov1 import MoCoV1
from workers.methods.mocov2 import MoCoV2
from workers.methods.mocov3 import MoCoV3
from workers.methods.rotnet import RotNet
from workers.methods.semi_rotnet import SemiRotNet
from workers.methods.simclr import SimCLR
from workers.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {
    m.name: m for m in (Supervised, SimCLR, MoCoV1, MoCoV2, MoCoV3, BYOL, DINO, MAE, RotNet, Exemplar, SemiRotNet)
}


def method_class(name: str) -> type[Method]:
    """The implementation of method ``name`` (KeyError with the known names otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None
