"""Worker failures in one clear line: known failure classes get a name and a hint, the traceback stays in
the job's log.

:func:`describe` turns an exception into the line recorded as the attempt's ``exit_reason`` (and so the
job's last error in ``dlth-orch status``): ``"<class>: <what happened>"``, e.g.
``"data file unreadable: /data/train.beton: ValueError: negative dimensions are not allowed"``.
"""

from __future__ import annotations

import math
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.distributed import DistContext


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


def check_loss(value: float, epoch: int, step: int, ctx: DistContext | None = None) -> None:
    """Raise :class:`NonFiniteLoss` if ``value`` (a training step's loss) is NaN or infinite.

    With a multi-rank ``ctx`` the verdict is all-reduced every step (every rank must call it at the same
    step): when the loss of *any* rank is not finite, every rank raises at once, naming the rank, instead
    of the others waiting for the stopped one in their next collective until the timeout."""
    bad = not math.isfinite(value)
    if ctx is None or not ctx.distributed:
        found = (None, value) if bad else None
    else:
        from workers.distributed import first_rank_with

        found = first_rank_with(ctx, bad, value)
    if found is not None:
        rank, loss = found
        where = "" if rank is None else f" on rank {rank}"
        raise NonFiniteLoss(f"loss is {loss}{where} at epoch {epoch + 1}, step {step + 1} "
                            "(lower the learning rate, or use fp32/bf16 precision)")


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _beton_in_frames(exc: BaseException) -> str | None:
    """The ``.beton`` a frame of the traceback was working on (FFCV's ``Reader(fname)``, ``Loader(fname)``)."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        local = tb.tb_frame.f_locals
        for value in (local.get("fname"), local.get("path"), getattr(local.get("self"), "_fname", None)):
            if isinstance(value, str | Path) and str(value).endswith(".beton"):
                found = str(value)  # the innermost frame wins
        tb = tb.tb_next
    return found


def _data_file(exc: BaseException) -> str | None:
    """The ``.beton`` named by the error or its traceback, ``"?"`` when FFCV raised it; else None."""
    for arg in (getattr(exc, "filename", None), *getattr(exc, "args", ())):
        if isinstance(arg, str | Path) and str(arg).endswith(".beton"):
            return str(arg)
    named = _beton_in_frames(exc)
    if named:
        return named
    if any("/ffcv/" in f.filename for f in traceback.extract_tb(exc.__traceback__)):
        return "?"
    return None


def describe(exc: BaseException, *, data_files: tuple[str, ...] = ()) -> str:
    """One line naming the failure class of ``exc`` (see the module docstring); ``data_files`` are the
    job's ``.beton`` files, named when the failure comes from reading one of them."""
    msg = _message(exc)
    low = str(exc).lower()
    name = type(exc).__name__
    if isinstance(exc, NonFiniteLoss):
        return f"NaN loss: {exc}"
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError" or "out of memory" in low:
        return f"out of memory: {msg} (lower the batch size or ask for more memory)"
    if "nccl" in low or name.startswith("Nccl") or "DistBackendError" in name:
        return f"NCCL error: {msg}"
    if "cuda" in low or name.startswith("Cuda") or "cudnn" in low or "cublas" in low:
        return f"CUDA error: {msg}"
    if name == "DatasetChanged" or "the dataset changed" in low or "was resolved against dataset" in low:
        return f"dataset changed: {msg}"
    where = _data_file(exc)
    if where is not None:
        if where == "?":
            where = " or ".join(data_files) if data_files else "a .beton file"
        return f"data file unreadable: {where}: {msg}"
    return msg
