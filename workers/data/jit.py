"""FFCV's numba JIT switch: compile pipelines for real datasets, skip compilation for tiny ones."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
AUTO_JIT_MIN_SAMPLES = 20_000


def configure_jit(mode: str, num_train_samples: int) -> bool:
    """Enable or disable FFCV's pipeline compiler for this process; returns whether it is enabled."""
    from workers.data._ffcv import import_ffcv

    import_ffcv()  # a bare FFCV import would set torch's thread count to 1 for the whole process
    from ffcv.pipeline.compiler import Compiler

    enabled = mode == "on" or (mode == "auto" and num_train_samples >= AUTO_JIT_MIN_SAMPLES)
    Compiler.set_enabled(enabled)
    log.info("FFCV JIT %s (%s, %d training samples)", "on" if enabled else "off", mode, num_train_samples)
    return enabled
