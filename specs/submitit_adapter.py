"""Every use of submitit's private API, in one place (submitit is pinned ``>=1.5,<1.6`` in setup.cfg and
exactly in constraints.txt: a new minor version must be checked here first).

dlth-orch runs SLURM array tasks with its own command (``python -m workers.slurm_env SUBMISSION_DIR``)
instead of submitit's pickled-callable runner, yet keeps submitit's ``SIGUSR2`` handling, checkpoint
and requeue. That needs three private pieces: the executor's command string and ``_submit_command``
(submit side, :class:`ArrayExecutor`), and the per-task pickle path plus ``process_job`` (task side,
:func:`place_task_pickle`, :func:`run_task`). The module lives in ``specs`` because both planes use it
(the orchestrator submits, the worker runs) and ``workers`` may not import ``orchestrator``; only the
SLURM modules import it, so submitit stays an import of the SLURM backend alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import submitit
from submitit.core import submission, utils

from specs.atomic import atomic_path


class ArrayExecutor(submitit.SlurmExecutor):
    """submitit's SLURM executor whose array tasks all run ``command`` (the same for every task)."""

    def __init__(self, folder: Path, command: str, *, python: str, max_num_timeout: int) -> None:
        super().__init__(folder=folder, max_num_timeout=max_num_timeout, python=python)
        self.command = command

    @property
    def _submitit_command_str(self) -> str:  # private: what sbatch's script runs
        return self.command

    def submit_array(self, n: int) -> str:
        """sbatch an array of ``n`` tasks; returns the array's job id."""
        self.parameters["map_count"] = n  # what submitit's own map_array sets
        return str(self._submit_command(self._submitit_command_str).job_id)


def place_task_pickle(folder: Path, fn: Callable[[], object], *, time_min: int, max_requeues: int) -> bool:
    """Write submitit's pickle of ``fn`` for this SLURM task into ``folder`` (atomically), unless there is
    one already (a requeued task finds the checkpointed one); True if it was written."""
    job_env = submitit.JobEnvironment()
    paths = utils.JobPaths(folder, job_id=job_env.job_id, task_id=job_env.global_rank)
    if paths.submitted_pickle.exists():
        return False
    delayed = utils.DelayedSubmission(fn)
    delayed.set_timeout(time_min, max_requeues)
    with atomic_path(paths.submitted_pickle) as tmp:
        delayed.dump(tmp)
    return True


def run_task(folder: Path) -> None:
    """submitit's job runner for this task (installs the SIGUSR2 handler, checkpoints and requeues)."""
    submission.process_job(str(folder))
