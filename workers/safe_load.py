"""Load torch files without running their code: every ``torch.load`` of the product goes through
:func:`load_torch` (``weights_only=True``: tensors, plain containers, numbers and strings only).

A file written by someone else (a checkpoint replaced in a shared workspace, an ``init`` file) can hold a
pickle whose unpickling calls any importable function (``os.system``). The weights-only unpickler refuses
such a file before anything runs; this module turns the refusal into one line naming the file:

- :class:`UnsafeFileError`: a well-formed pickle that asks for more than weights (a global such as
  ``posix.system`` or ``argparse.Namespace``). Never loaded; the caller fails.
- :class:`UnreadableFileError`: not a torch file, empty, truncated or corrupted (a torn write). Callers
  that keep a previous copy (:mod:`workers.checkpoint`) set it aside and fall back.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

# what a checkpoint of dlth-orch <= 0.x held besides tensors: NumPy's RNG state (a uint32 array); rebuilding
# an array runs no code of the file (its items go through the same restricted unpickler)
LEGACY_NUMPY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class UnsafeFileError(ValueError):
    """The file is a pickle that would import or call more than weights: refused, nothing of it ran."""


class UnreadableFileError(ValueError):
    """The file is not a readable torch file (empty, truncated, corrupted)."""


def load_torch(path: str | os.PathLike[str], map_location: str | torch.device = "cpu", *,
               legacy_numpy: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``, with one-line :class:`UnsafeFileError` /
    :class:`UnreadableFileError`; ``legacy_numpy`` also admits NumPy arrays (older checkpoints' RNG)."""
    path = Path(path)
    allowed = LEGACY_NUMPY_GLOBALS if legacy_numpy else []
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # refused anyway, or fine
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:
        if _well_formed_pickle(path):
            found = _GLOBAL.search(str(exc))
            what = f"GLOBAL {found.group(1)}" if found else "an instruction beyond tensors and plain containers"
            raise UnsafeFileError(f"{path}: refused to load: the pickle asks for {what}, which could run code; "
                                  "only weights are loaded (save a plain state dict or a .safetensors file)") from None
        raise UnreadableFileError(f"{path}: unreadable: corrupted or not a torch file") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise UnreadableFileError(f"{path}: unreadable: truncated or not a torch file ({line[:120]})") from None


def _well_formed_pickle(path: Path) -> bool:
    """Whether the pickle in ``path`` (a torch zip's ``data.pkl``, or the file itself) parses to its end:
    the weights-only unpickler refused an intact file, not a torn one."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next(n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "data.pkl")
                data = zf.read(name)
        else:
            data = path.read_bytes()
        return any(op.name == "STOP" for op, _arg, _pos in pickletools.genops(data))
    except Exception:  # noqa: BLE001 (any parse failure means: not a well-formed pickle)
        return False
