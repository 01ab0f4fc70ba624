"""``uniform``: k classes spread evenly over the class list, or a seeded random choice of k."""

from __future__ import annotations

from typing import Any

import numpy as np

from subsets.base import Strategy, SubsetError, check_choice, check_class_count
from subsets.meta import DatasetMeta

MODES = ("even", "random")


class Uniform(Strategy):
    name = "uniform"
    params: dict[str, Any] = {"k": None, "mode": "even", "seed": 0}

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        out = super().validate(params)
        check_class_count(out["k"])
        check_choice("mode", out["mode"], MODES)
        if isinstance(out["seed"], bool) or not isinstance(out["seed"], int) or out["seed"] < 0:
            raise SubsetError("seed", "a non-negative integer")
        if out["mode"] == "even":
            out.pop("seed")
        return out

    def select_classes(self, params: dict[str, Any], meta: DatasetMeta) -> list[int]:
        k, n = params["k"], meta.num_classes
        if k > n:
            raise SubsetError("k", f"at most {n} (the dataset's number of classes)")
        if params["mode"] == "random":
            rng = np.random.default_rng(params["seed"])
            return sorted(int(i) for i in rng.choice(n, size=k, replace=False))
        # every n/k-th class in wnid order
        by_wnid = sorted(range(n), key=lambda i: meta.classes[i].wnid)
        picks = np.floor(np.arange(k) * n / k).astype(int)
        return sorted(by_wnid[i] for i in picks)
