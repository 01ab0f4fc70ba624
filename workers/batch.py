"""Several jobs in one worker process (``[resources] jobs_per_worker``): what must not leak from one to the next.

A batched job must give the same numbers as the same job alone in its own process. Each job seeds torch,
Python and NumPy itself (:func:`workers.train.seed_everything`) and builds its own loaders, model and
optimiser; what is left is process-wide state a job may change and never changes back: PyTorch's
deterministic mode and cuDNN flags (``[train] deterministic``), torch's thread count (FFCV's import sets it
to 1), FFCV's JIT switch, cached CUDA memory, and logging handlers. :class:`ProcessState` is taken once
before the first job and put back before every job; :func:`job_log` gives each job its own log file.

What a batch saves: the process start and imports (:func:`preload`), once for all its jobs; and between two
jobs, a garbage collection of the last job's objects alone (:func:`settle`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from specs.contract import LOG_DIR

log = logging.getLogger(__name__)
_CUBLAS = "CUBLAS_WORKSPACE_CONFIG"


@dataclass(frozen=True)
class ProcessState:
    """The process-wide settings a job may change (see the module docstring)."""

    deterministic: bool
    deterministic_warn_only: bool
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    num_threads: int
    cublas_workspace: str | None

    @classmethod
    def capture(cls) -> ProcessState:
        """This process's settings now (before its first job)."""
        return cls(*cls._deterministic_now(), torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                   torch.get_num_threads(), os.environ.get(_CUBLAS))

    @staticmethod
    def _deterministic_now() -> tuple[bool, bool]:
        return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()

    def restore(self) -> None:
        """Put the settings back, free what the previous job left (its loaders, model, CUDA cache)."""
        if self._deterministic_now() != (self.deterministic, self.deterministic_warn_only):
            # (only when a job changed it: the call imports torch._inductor, seconds of a worker's start)
            torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        if torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)
        if self.cublas_workspace is None:
            os.environ.pop(_CUBLAS, None)
        else:
            os.environ[_CUBLAS] = self.cublas_workspace
        settle()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


def settle() -> None:
    """Collect the previous job's garbage, then freeze what is left (``gc.freeze``).

    What survives a job is the process's own (modules, classes, caches): frozen, the garbage collector never
    walks it again. Without it every ``gc.collect`` here, and every full collection Python runs during
    training, walks the millions of objects torch, timm and FFCV create on import (about a second each)."""
    gc.collect()
    gc.freeze()


def preload() -> None:
    """Import what every job of the batch imports (the training loop, FFCV, timm, TensorBoard's writer) before
    the first one starts, so that :func:`settle` freezes it with the process's own objects. Best effort: an
    import that fails here fails again in the first job, which records it as its own failure."""
    try:
        import timm  # noqa: F401  (every backbone is a timm model)

        import workers.train  # noqa: F401
        from workers.data._ffcv import import_ffcv

        import_ffcv()
    except Exception as exc:  # noqa: BLE001
        log.warning("preloading the training modules failed (%s): the first job will say why", exc)
    with contextlib.suppress(ImportError):  # rank 0 writes every job's events (none without TensorBoard)
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401


def job_log_path(job_dir: Path) -> Path:
    """A new log file of one job run in a batch: ``<job dir>/logs/<time>-<pid>-<n>.log``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = job_dir / LOG_DIR / f"{stamp}-{os.getpid()}"
    path, n = base.with_suffix(".log"), 1
    while path.exists():  # the same job twice within a second (retried in the same process)
        path, n = Path(f"{base}-{n}.log"), n + 1
    return path


@contextlib.contextmanager
def job_log(path: Path, fmt: logging.Formatter | None = None) -> Iterator[None]:
    """Copy every log record of the process to ``path`` while one job runs (its attempt's own log)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    root = logging.getLogger()
    handler.setFormatter(fmt or (root.handlers[0].formatter if root.handlers else None) or logging.Formatter())
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
