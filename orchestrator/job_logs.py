"""A job's log across its attempts (``dlth-orch logs``): which files each attempt wrote, each attempt's part
of them, and following them while the job runs.

Where the logs are: the local backend gives every attempt its own file ``<job dir>/logs/<time>-<pid>.log``
(every rank of a torchrun job writes to it, each line marked ``[rank R]``); on SLURM an attempt's log is
submitit's per-task pair ``<submission>/logs/<array>_<task>_<rank>_log.out`` / ``.err``, which a requeued
task (same SLURM id) appends to. The attempt row's ``log_path`` names rank 0's ``.out``; the other files
are derived from it. A file shared by several attempts is cut at submitit's "Starting with JobEnvironment"
lines, one per run, when there are as many of them as attempts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from db import AttemptRow, JobState, Store

RUN_START = re.compile(r"^.*Starting with JobEnvironment", re.MULTILINE)
RANK_MARK = re.compile(r"\[rank (\d+)\]")
SLURM_OUT = re.compile(r"_(\d+)_log\.out$")


@dataclass(frozen=True)
class AttemptLog:
    """One attempt and the files that hold its log (for one rank)."""

    number: int
    backend: str
    backend_id: str | None
    node: str | None
    started: datetime | None
    state: str
    files: tuple[Path, ...]

    def header(self, with_state: bool = True) -> str:
        """The line that marks where this attempt starts."""
        when = self.started.isoformat(sep=" ", timespec="seconds") if self.started else "?"
        where = f"{self.backend} {self.backend_id}" if self.backend_id else self.backend
        state = f", {self.state}" if with_state else ""
        return f"==> attempt {self.number} on {self.node or '?'} at {when} ({where}{state}) <=="


def rank_files(log_path: str | None, backend: str, rank: int) -> tuple[Path, ...]:
    """The files of one rank of an attempt whose rank-0 log is ``log_path``: SLURM's ``.out`` and ``.err``
    of that rank's task; the one local file (shared by every rank)."""
    if not log_path:
        return ()
    path = Path(log_path)
    if backend == "slurm" and SLURM_OUT.search(path.name):
        out = path.with_name(SLURM_OUT.sub(f"_{rank}_log.out", path.name))
        return out, out.with_name(out.name.removesuffix(".out") + ".err")
    return (path,)


def attempt_logs(store: Store, job_hash: str, rank: int = 0) -> list[AttemptLog]:
    """Every attempt of ``job_hash`` in order, with the files of rank ``rank``."""
    codes = {c.attempt_id: c for c in store.attempt_codes([job_hash]).get(job_hash, [])}
    return [_attempt_log(a, codes[a.id].node if a.id in codes else None, rank) for a in store.attempts(job_hash)]


def _attempt_log(a: AttemptRow, node: str | None, rank: int) -> AttemptLog:
    return AttemptLog(number=a.number, backend=a.backend, backend_id=a.backend_id, node=node or a.host,
                      started=a.started_at, state=a.state, files=rank_files(a.log_path, a.backend, rank))


def read_bytes(path: Path, offset: int = 0) -> bytes:
    """The bytes of ``path`` from ``offset`` on (none if the file is not there yet)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read()
    except FileNotFoundError:
        return b""


def read_text(path: Path) -> str:
    """The text of ``path`` ('' if the file is not there yet)."""
    return read_bytes(path).decode(errors="replace")


class RankFilter:
    """Keeps the lines of one rank in a file every rank writes to: lines marked ``[rank R]``, and unmarked
    lines (a traceback, a print) that follow one of them."""

    def __init__(self, rank: int | None) -> None:
        self.rank, self._keep = rank, True

    def __call__(self, text: str) -> str:
        if self.rank is None:
            return text
        out = []
        for line in text.splitlines(keepends=True):
            mark = RANK_MARK.search(line)
            if mark:
                self._keep = int(mark.group(1)) == self.rank
            if self._keep:
                out.append(line)
        return "".join(out)


def _pieces(text: str, runs: int) -> list[str]:
    """``text`` cut before each of its ``runs`` run starts; the whole of it (once) if the count differs."""
    starts = [m.start() for m in RUN_START.finditer(text)]
    if len(starts) != runs or runs < 2:
        return [text] + [""] * (runs - 1)
    bounds = [0, *starts[1:], len(text)]
    return [text[bounds[i]:bounds[i + 1]] for i in range(runs)]


def segments(logs: list[AttemptLog], rank: int | None = None) -> Iterator[tuple[AttemptLog, str]]:
    """Each attempt with its part of its files (``rank`` filters a file every rank writes, i.e. local)."""
    users: dict[Path, list[int]] = {}
    for a in logs:
        for f in a.files:
            users.setdefault(f, []).append(a.number)
    cut = {f: dict(zip(nums, _pieces(read_text(f), len(nums)), strict=True)) for f, nums in users.items()}
    for a in logs:
        keep = RankFilter(rank if a.backend != "slurm" else None)
        yield a, "".join(keep(cut[f][a.number]) for f in a.files)


@dataclass
class Follower:
    """Follows a job's log: new attempts are announced as they appear, new bytes of their files printed.

    A file a requeued attempt shares with the one before it is continued where it was, under the new
    attempt's header. ``poll`` returns False once the job has ended (terminal and no attempt open) and
    everything it wrote has been printed."""

    store: Store
    job_hash: str
    failure_budget: int
    emit: Callable[[str], None]
    rank: int = 0
    attempt: int | None = None

    def __post_init__(self) -> None:
        self._offsets: dict[Path, int] = {}
        self._announced: set[int] = set()
        self._filters: dict[Path, RankFilter] = {}

    def poll(self) -> bool:
        """Print what is new; False when there is nothing more to wait for."""
        logs = [a for a in attempt_logs(self.store, self.job_hash, self.rank)
                if self.attempt is None or a.number == self.attempt]
        for a in logs:
            if a.number not in self._announced:
                self._announced.add(a.number)
                self.emit(a.header(with_state=False) + "\n")
        for a in logs:  # a file's new bytes belong to the newest attempt that uses it
            newest = max((b for b in logs if set(b.files) & set(a.files)), key=lambda b: b.number)
            if newest is not a:
                continue
            for f in a.files:
                self._print_new(f, a.backend)
        return not self._ended(logs)

    def _print_new(self, path: Path, backend: str, partial: bool = False) -> None:
        offset = self._offsets.get(path, 0)
        data = read_bytes(path, offset)
        complete = data if partial else data[:data.rfind(b"\n") + 1]  # else whole lines: the rest comes later
        if not complete:
            return
        self._offsets[path] = offset + len(complete)
        keep = self._filters.setdefault(path, RankFilter(self.rank if backend != "slurm" else None))
        if shown := keep(complete.decode(errors="replace")):
            self.emit(shown)

    def _ended(self, logs: list[AttemptLog]) -> bool:
        if self.attempt is not None and logs:
            return logs[0].state != "RUNNING"
        job = self.store.job(self.job_hash)
        if job is None or any(a.state == "RUNNING" for a in logs):
            return False
        if job.state == JobState.FAILED:  # a retry within the budget is still to come
            return job.failure_count > self.failure_budget
        return job.state in JobState.TERMINAL  # type: ignore[attr-defined]

    def drain(self) -> None:
        """Print whatever the files still hold (after the job ended, or on Ctrl-C)."""
        for a in attempt_logs(self.store, self.job_hash, self.rank):
            if self.attempt is None or a.number == self.attempt:
                for f in a.files:
                    self._print_new(f, a.backend, partial=True)
