"""Grid files, one way: read (TOML -> tables) -> spec (the typed grid) -> combos (pure) -> validate
-> expand (-> jobs, lottery chains) -> graph (dependent jobs along the lifecycle).

Each module imports only the stages before it, from their own submodules (never from this ``__init__``).
Callers outside the package import the names below from ``orchestrator.grid``; ``graph`` (which needs the
database) is imported as ``orchestrator.grid.graph``.
"""

from orchestrator.grid.combos import config_label, count_jobs, method_combinations, method_config, split_values
from orchestrator.grid.expand import expand, resolve_subsets
from orchestrator.grid.expand_lottery import expand_lottery, steps_per_epoch
from orchestrator.grid.read import read_toml
from orchestrator.grid.spec import (
    ExpandedJob,
    GridSpec,
    InitTable,
    LotteryGrid,
    LotterySetting,
    MethodTable,
    ReportConfig,
)
from orchestrator.grid.validate import BUILTIN_DATASETS, load_grid

__all__ = [
    "BUILTIN_DATASETS",
    "ExpandedJob",
    "GridSpec",
    "InitTable",
    "LotteryGrid",
    "LotterySetting",
    "MethodTable",
    "ReportConfig",
    "config_label",
    "count_jobs",
    "expand",
    "expand_lottery",
    "load_grid",
    "method_combinations",
    "method_config",
    "read_toml",
    "resolve_subsets",
    "split_values",
    "steps_per_epoch",
]
