"""Write one ``.beton`` file (an image field and an integer label) with FFCV's parallel writer.

FFCV 1.0.2's ``DatasetWriter`` spins forever when a worker process dies and shows a tqdm bar. The
:class:`_Writer` subclass keeps FFCV's file layout and worker code but supervises the workers: a dead
worker or a bad image (in fail-fast mode) stops the write at once, and progress is a rich bar. An image
that cannot be decoded never kills a worker: it is written as a tiny placeholder and flagged, so the
caller can either fail naming its path or rewrite without it.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from workers.data._ffcv import import_ffcv

log = logging.getLogger(__name__)

PLACEHOLDER = np.zeros((8, 8, 3), dtype=np.uint8)
POLL_S = 0.05


class WriteAborted(Exception):
    """The write stopped early because a bad image was found in fail-fast mode."""


class ImageSource(Protocol):
    """What :func:`write_beton` reads: ``len()``, ``load_image(i)`` (H x W x 3 uint8), ``labels``, and
    ``paths`` (what to call sample ``i`` in messages)."""

    labels: np.ndarray
    paths: Sequence[str]

    def __len__(self) -> int: ...

    def load_image(self, i: int) -> Any: ...


@dataclass(frozen=True)
class ImageOptions:
    """How images are stored (the options of FFCV's ``RGBImageField``)."""

    max_resolution: int | None = 256
    jpeg_quality: int = 90
    write_mode: str = "jpg"  # raw | jpg | proportion
    compress_probability: float = 0.5


class _FlaggingSamples:
    """Indexable ``(image, label)`` view of a source; a failed read yields a placeholder and a flag."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source
        self.flags = mp.get_context("fork").RawArray(ctypes.c_uint8, len(source))
        self.num_bad = mp.get_context("fork").RawValue(ctypes.c_uint64, 0)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        try:
            image = self.source.load_image(i)
        except Exception:  # noqa: BLE001 - any unreadable image is reported by path afterwards
            self.flags[i] = 1
            self.num_bad.value += 1  # only read as "non-zero" by the parent; races do not matter
            image = PLACEHOLDER
        return image, int(self.source.labels[i])

    def bad_indices(self) -> np.ndarray:
        return np.flatnonzero(np.frombuffer(self.flags, dtype=np.uint8))


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a killed writer leaves no orphans)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: orphans finish their chunk and exit
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker(parent_pid: int, work_fn: Callable[..., None], *args: Any) -> None:
    import cv2

    _die_with_parent(parent_pid)
    cv2.setNumThreads(1)  # parallelism comes from the processes; a forked OpenCV pool may hang
    work_fn(*args)


def _make_writer_class() -> type:
    import_ffcv()
    from ffcv.writer import DatasetWriter

    class _Writer(DatasetWriter):
        """FFCV's writer with supervised workers and a rich progress bar (see the module docstring)."""

        should_abort: Callable[[], bool] = staticmethod(lambda: False)
        progress_label: str = "writing"
        show_progress: bool = True

        def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):  # noqa: ANN001
            from ffcv.memory_allocator import MemoryAllocator

            ctx = mp.get_context("fork")
            self.num_samples = num_samples
            self.prepare()
            workqueue = ctx.Queue()
            for todo in queue_content:
                workqueue.put(todo)
            for _ in range(self.num_workers):
                workqueue.put(None)
            allocations_queue = ctx.Queue()
            done_number = ctx.Value(ctypes.c_uint64, 0)
            allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
            args = (workqueue, self.metadata_sm, self.metadata_type, self.fields, allocator, done_number,
                    allocations_queue, *extra_worker_args)
            processes = [ctx.Process(target=_worker, args=(os.getpid(), work_fn, *args), daemon=True)
                         for _ in range(self.num_workers)]
            try:
                for p in processes:
                    p.start()
                self._supervise(processes, done_number)
                allocation_list = []
                for _ in processes:
                    allocation_list.extend(allocations_queue.get(timeout=600))
                for p in processes:
                    p.join()
                self.finalize(allocation_list)
            finally:
                for p in processes:
                    if p.is_alive():
                        p.terminate()
                    p.join(timeout=10)
                self.metadata_sm.close()
                self.metadata_sm.unlink()

        def _supervise(self, processes: list, done_number: Any) -> None:
            with _progress(self.show_progress) as bar:
                task = bar.add_task(self.progress_label, total=self.num_samples) if bar else None
                while True:
                    done = int(done_number.value)
                    if bar is not None:
                        bar.update(task, completed=done)
                    if done >= self.num_samples:
                        return
                    if self.should_abort():
                        raise WriteAborted(self.fname)
                    for p in processes:
                        if p.exitcode not in (None, 0):
                            raise RuntimeError(
                                f"{self.fname}: FFCV writer worker exited with code {p.exitcode} "
                                "(its traceback is above)"
                            )
                    if all(p.exitcode == 0 for p in processes) and done_number.value < self.num_samples:
                        raise RuntimeError(f"{self.fname}: FFCV writer workers ended after {done} samples")
                    time.sleep(POLL_S)

    return _Writer


def _progress(show: bool):  # noqa: ANN202
    if not show:
        return nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def write_beton(
    path: str | Path,
    source: ImageSource,
    options: ImageOptions,
    *,
    indices: Sequence[int] | None = None,
    page_size: int = 4 * 2**20,
    num_workers: int = 1,
    fail_fast: bool = True,
    progress: bool = True,
    label: str = "writing",
) -> np.ndarray:
    """Write ``source`` (or its ``indices``, in that order) to ``path``; return the indices of bad images.

    With ``fail_fast`` the write stops at the first bad image (the file at ``path`` is then incomplete:
    the caller deletes it). Otherwise bad images are stored as placeholders and all are returned.
    """
    import_ffcv()
    from ffcv.fields import IntField, RGBImageField

    samples = _FlaggingSamples(source)
    fields = {
        "image": RGBImageField(
            write_mode=options.write_mode,
            max_resolution=options.max_resolution,
            jpeg_quality=options.jpeg_quality,
            compress_probability=options.compress_probability,
        ),
        "label": IntField(),
    }
    writer = _make_writer_class()(str(path), fields, page_size=page_size, num_workers=num_workers)
    writer.show_progress = progress
    writer.progress_label = label
    if fail_fast:
        writer.should_abort = lambda: samples.num_bad.value > 0
    order = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
    chunksize = max(1, min(100, len(order) // (4 * max(1, num_workers)) or 1))
    with suppress(WriteAborted):
        writer.from_indexed_dataset(samples, indices=[int(i) for i in order], chunksize=chunksize)
    return samples.bad_indices()
