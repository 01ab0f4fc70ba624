"""Counter-based random draws: every augmentation draw is a pure function of (job seed, epoch, view,
sample index, draw number), so a job's augmentations repeat exactly whatever thread, worker count,
batch composition or rank handled a sample.

Why not an RNG object: FFCV decodes in numba threads (each with its own, unseedable generator) and a
generator shared by threads hands out draws in whatever order the threads ask. A counter-based
generator needs no state: ``unit(key, n)`` hashes the sample's key and the draw number.

The hash is Chris Wellons' ``triple32``-style 32-bit integer mixer (two multiply-xorshift rounds with
odd 31-bit multipliers). Every intermediate value stays below 2**63, so the *same* Python source gives
bit-identical results on Python ints, numba-compiled int64 code (FFCV's JIT), NumPy int64 arrays and
torch int64 tensors on any device. :func:`make_draws` builds the functions for one of those worlds
(``compile`` = identity, or FFCV's ``Compiler.compile``); :data:`DRAWS` is the plain one.

Keys: ``seed_key(seed)`` -> ``view_key(seed, epoch, view)`` -> ``sample_keys(view key, index, stream)``,
two streams per sample:
``CROP_STREAM`` (crop + flip, drawn in FFCV's decoder) and ``COLOUR_STREAM`` (the batched colour ops
of :mod:`workers.data.augment`, drawn in torch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # keeps mix32(0) chains away from the fixed point 0
_TO_UNIT = 1.0 / (1 << 24)  # 24-bit uniforms: exact in float32 and float64
CROP_STREAM, COLOUR_STREAM = 0, 1
#: draws of one random-resized-crop attempt (area, log aspect ratio, top, left), 10 attempts, then flip
CROP_DRAWS_PER_ATTEMPT, CROP_ATTEMPTS = 4, 10
FLIP_DRAW = CROP_DRAWS_PER_ATTEMPT * CROP_ATTEMPTS


def mix32(x: Any) -> Any:
    """A 32-bit integer hash of ``x`` (int, int64 array or tensor); the result is in [0, 2**32)."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & MASK32
    return x ^ (x >> 15)


@dataclass(frozen=True)
class Draws:
    """The keyed functions of one world (plain Python/NumPy/torch, or numba-compiled)."""

    derive: Callable[[Any, Any], Any]  # (key, value >= 0) -> a new 32-bit key
    unit: Callable[[Any, Any], Any]  # (key, draw number) -> uniform in [0, 1)


def make_draws(compile: Callable[[Callable], Callable] = lambda f: f) -> Draws:  # noqa: A002 - FFCV's name
    """:class:`Draws` whose functions are passed through ``compile`` (numba needs its callees compiled)."""
    mix = compile(mix32)

    def derive(key: Any, value: Any) -> Any:
        return mix(key ^ mix((value + _GOLDEN) & MASK32))

    derive_c = compile(derive)

    def unit(key: Any, n: Any) -> Any:
        return (derive_c(key, n) >> 8) * _TO_UNIT

    return Draws(derive=derive_c, unit=compile(unit))


DRAWS = make_draws()


def seed_key(seed: int) -> int:
    """The key of a job seed (any non-negative integer)."""
    return int(DRAWS.derive(mix32(seed >> 32), seed & MASK32))


def view_key(seed: int, epoch: int, view: int) -> int:
    """The key of one view of one epoch of a job: every sample's key derives from it."""
    return int(DRAWS.derive(DRAWS.derive(seed_key(seed), epoch), view))


def sample_keys(key: int, indices: np.ndarray | torch.Tensor, stream: int) -> Any:
    """The keys of ``stream`` for the samples ``indices`` (dataset indices) of a view keyed ``key``."""
    return DRAWS.derive(DRAWS.derive(key, indices), stream)


class SampleDraws:
    """Per-sample uniforms for a batch: row ``i`` depends only on sample ``i``'s key and how many draws
    were made before (the ops of a view run in a fixed order), never on the rest of the batch."""

    def __init__(self, keys: torch.Tensor) -> None:
        self.keys = keys.to(torch.int64)
        self._drawn = 0

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniforms in [0, 1), shape ``(N, *shape)`` (float32, on the keys' device)."""
        count = int(np.prod(shape)) if shape else 1
        n = torch.arange(self._drawn, self._drawn + count, device=self.keys.device, dtype=torch.int64)
        self._drawn += count
        u = DRAWS.unit(self.keys.view(-1, 1), n.view(1, -1)).to(torch.float32)
        return u.view(len(self), *shape)

    @classmethod
    def for_batch(cls, seed: int, epoch: int, view: int, indices: np.ndarray, device: torch.device) -> SampleDraws:
        """The colour-op draws of ``view`` for the samples ``indices`` of ``epoch``."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=device)
        return cls(sample_keys(view_key(seed, epoch, view), idx, COLOUR_STREAM))
