"""Import FFCV without side effects: keep torch's thread count, skip its import-time numba compilation, and
fix FFCV 1.0.2's numba type bug.

- Importing ``ffcv`` calls ``torch.set_num_threads(1)``; the caller's thread count is restored.
- ``ffcv.fields.rgb_image`` builds its two-entry ``IMAGE_MODES`` table as a numba typed ``Dict``: numba
  compiles its dictionary code on the spot, seconds of every worker's start (more than ``import torch``).
  FFCV only ever reads the table from Python (``generate_code`` closes over the plain ints it returns, the
  writer stores them), so a plain ``dict`` holding the same ints is used instead while FFCV is imported.
- ``OSCacheManager.state_type`` marks the memory-mapped file as read-only by *mutating* numba's
  interned ``uint8[::1]`` type (``t1.mutable = False``). That corrupts numba's type cache for the whole
  process: every later ``uint8[::1]`` is read-only, and dispatcher finalisers fail with KeyErrors
  ("Exception ignored in: <finalize object ...>") when loaders are garbage-collected. The patched
  property and reader build the read-only array type it meant instead.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


def _readonly_bytes():  # noqa: ANN202
    import numba as nb

    return nb.types.Array(nb.types.uint8, 1, "C", readonly=True)


def _state_type(self):  # noqa: ANN001, ANN202 - FFCV's signature
    import numba as nb

    offsets = nb.types.Array(nb.types.uint64, 1, "C")
    return nb.types.Tuple([_readonly_bytes(), offsets, offsets])


def _compile_reader(self):  # noqa: ANN001, ANN202 - FFCV 1.0.2's, with an honest read-only signature
    import numba as nb
    import numpy as np
    from ffcv.pipeline.compiler import Compiler

    def read(address, mem_state):  # noqa: ANN001, ANN202
        size = mem_state[2][np.searchsorted(mem_state[1], address)]
        return mem_state[0][address:address + size]

    return Compiler.compile(read, _readonly_bytes()(nb.uint64, self.state_type))


@contextlib.contextmanager
def _plain_typed_dict() -> Iterator[None]:
    """``numba.typed.Dict`` is the builtin ``dict`` inside the block (see the module docstring)."""
    import numba.typed

    own = vars(numba.typed)
    typed = own.get("Dict")  # None: not loaded yet (numba loads it on first use)
    numba.typed.Dict = dict
    try:
        yield
    finally:
        if typed is None:
            del numba.typed.Dict
        else:
            numba.typed.Dict = typed


def import_ffcv() -> None:
    """Import ``ffcv`` (once), keeping the caller's torch intra-op thread count, without compiling numba's
    typed dictionary; apply the type fix."""
    if "ffcv" not in sys.modules:
        import torch

        threads = torch.get_num_threads()
        with _plain_typed_dict():
            import ffcv  # noqa: F401

        torch.set_num_threads(threads)
    from ffcv.memory_managers.os_cache import OSCacheManager

    if getattr(OSCacheManager, "_dlth_patched", False):
        return
    OSCacheManager.state_type = property(_state_type)
    OSCacheManager.compile_reader = _compile_reader
    OSCacheManager._dlth_patched = True
