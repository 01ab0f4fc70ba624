"""TensorBoard event files of a job (rank 0 only): ``<job dir>/tensorboard/``, one run per job, so that
``tensorboard --logdir .dlth/jobs`` shows every job of the workspace.

Every per-epoch value the worker records (losses, ``lr``, ``images_per_s``, evaluation metrics) is a
scalar whose step is the epoch (0-based, as in ``metrics.jsonl``); final metrics go under ``final/`` at
the last epoch. Steps only go up across requeues and resumes: an attempt continues at the epoch its
checkpoint ends on, and its writer purges anything an earlier attempt wrote at or after that epoch
(``purge_step``), so an epoch run twice appears once. Writing never fails the job: a problem is logged.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from specs.contract import JobPaths

log = logging.getLogger(__name__)
FINAL_PREFIX = "final/"


class EpochBoard:
    """The TensorBoard writer of one attempt, opened at its first epoch."""

    def __init__(self, job_dir: Path) -> None:
        self.log_dir = JobPaths.of(job_dir).tensorboard
        self._writer: Any = None
        self._broken = False
        self.last_step: int | None = None

    def _open(self, purge_step: int) -> Any:
        if self._writer is None and not self._broken:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)
            except (ImportError, OSError) as exc:
                self._broken = True
                log.warning("no TensorBoard events for %s: %s", self.log_dir.parent.name, exc)
        return self._writer

    def _write(self, step: int, values: dict[str, float], prefix: str = "", purge_from: int | None = None) -> None:
        writer = self._open(step if purge_from is None else purge_from)
        if writer is None:
            return
        try:
            for name, value in sorted(values.items()):
                if isinstance(value, int | float) and math.isfinite(value):
                    writer.add_scalar(prefix + name, float(value), global_step=step)
            writer.flush()
            self.last_step = step
        except OSError as exc:
            log.warning("TensorBoard events of %s not written: %s", self.log_dir.parent.name, exc)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        """The values of one finished epoch at step ``epoch``."""
        self._write(epoch, values)

    def final(self, values: dict[str, float], epoch: int | None) -> None:
        """The final metrics under ``final/`` at the last epoch's step."""
        step = epoch if epoch is not None else (self.last_step or 0)
        self._write(step, values, FINAL_PREFIX, purge_from=step + 1)  # keeps the epochs written before

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as exc:
                log.warning("TensorBoard events of %s not closed: %s", self.log_dir.parent.name, exc)
            self._writer = None
