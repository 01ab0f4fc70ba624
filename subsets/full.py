"""``full``: every class and every sample (the reference every ranking is compared with)."""

from __future__ import annotations

from typing import Any

from subsets.base import Strategy
from subsets.meta import DatasetMeta


class Full(Strategy):
    name = "full"
    params: dict[str, Any] = {}

    def select_classes(self, params: dict[str, Any], meta: DatasetMeta) -> list[int]:
        return list(range(meta.num_classes))
