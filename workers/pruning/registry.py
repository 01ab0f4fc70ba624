"""Strategy name -> implementation. Adding a strategy: one file in this package plus one line here
(and its name in ``specs.lottery.STRATEGIES`` if grids may choose it)."""

from __future__ import annotations

from workers.pruning.base import PruningStrategy
from workers.pruning.magnitude_global import GlobalMagnitude
from workers.pruning.magnitude_layerwise import LayerwiseMagnitude
from workers.pruning.random_layerwise import RandomLayerwise

STRATEGIES: dict[str, type[PruningStrategy]] = {
    GlobalMagnitude.name: GlobalMagnitude,
    LayerwiseMagnitude.name: LayerwiseMagnitude,
    RandomLayerwise.name: RandomLayerwise,
}


def get_strategy(name: str) -> PruningStrategy:
    """An instance of strategy ``name`` (KeyError with the known names otherwise)."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise KeyError(f"unknown pruning strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None
