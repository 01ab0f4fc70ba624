"""The rank-consistency report: does each subset rank training configurations like the full dataset?

The names below are loaded on first use (PEP 562): the control plane (``status``, a relaunch) imports light
modules of this package, such as :mod:`orchestrator.report.cost`, without paying for scipy and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Criterion": "decision", "Decision": "decision",
    "JobResult": "ranking", "Report": "ranking", "build_report": "ranking",
    "print_report": "render", "report_json": "render", "write_report_files": "render",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` when it is first asked for."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
