"""The strategy registry: one import and one entry per strategy file. Strategies import only
:mod:`subsets.base`, so there is no import circle; lookup lives here."""

from __future__ import annotations

from typing import Any

from subsets.base import Strategy, SubsetError
from subsets.full import Full
from subsets.named import Named
from subsets.per_class_accuracy import PerClassAccuracy
from subsets.ticket import Ticket
from subsets.uniform import Uniform
from subsets.wordnet import WordNet

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Full, Named, PerClassAccuracy, Ticket, Uniform,
                                                                    WordNet)}


def get_strategy(name: Any) -> Strategy:
    """Instantiate the strategy registered under ``name``; :class:`SubsetError` (key ``strategy``) if none."""
    if not isinstance(name, str) or name not in STRATEGIES:
        raise SubsetError("strategy", f"one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]()


def strategy_names() -> list[str]:
    return sorted(STRATEGIES)


def identity_params(strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without the strategy's path parameters: the part that defines what a subset is."""
    skip = set(get_strategy(strategy).path_params)
    return {k: v for k, v in params.items() if k not in skip}
