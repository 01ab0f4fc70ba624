"""Import FFCV without side effects on torch: importing it calls ``torch.set_num_threads(1)``."""

from __future__ import annotations

import sys


def import_ffcv() -> None:
    """Import ``ffcv`` once, keeping the caller's torch intra-op thread count."""
    if "ffcv" in sys.modules:
        return
    import torch

    threads = torch.get_num_threads()
    import ffcv  # noqa: F401

    torch.set_num_threads(threads)
