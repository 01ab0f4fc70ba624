"""FFCV's random-resized-crop decoder with repeatable draws: crop and flip keyed by (seed, epoch, view,
sample index) (:mod:`workers.data.draws`).

FFCV 1.0.2's ``RandomResizedCropRGBImageDecoder`` and ``RandomHorizontalFlip`` draw from NumPy's global
generator: in numba's compiled code that is one generator per thread (not seedable from Python), without
the JIT the process-wide one shared with every other thread. Their crops change from run to run. This
decoder draws the same crop as torchvision's ``RandomResizedCrop`` (10 attempts, then the centre crop
clamped to the ratio range) from the sample's own key, and flips in the same pass.

How the epoch reaches compiled code: numba freezes the values a compiled function closes over, and FFCV
compiles a pipeline once. The decoder therefore asks FFCV for one more (tiny) buffer, which FFCV passes
to it with every batch; :func:`install_epoch_keys` makes the loader write the epoch into that buffer
when it allocates an epoch's buffers (FFCV allocates them anew for every epoch, before its thread starts).
The job seed and view index are fixed for a loader and compiled in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from workers.data._ffcv import import_ffcv
from workers.data.draws import (
    CROP_ATTEMPTS,
    CROP_DRAWS_PER_ATTEMPT,
    CROP_STREAM,
    FLIP_DRAW,
    Draws,
    make_draws,
    seed_key,
)

_EPOCH_SLOT = 2  # position of the epoch buffer in the decoder's memory tuple (image, decode scratch, epoch)


def make_random_crop(draws: Draws) -> Callable[..., tuple[int, int, int, int]]:
    """torchvision's ``RandomResizedCrop.get_params`` drawing from ``draws.unit(key, n)``."""
    unit = draws.unit

    def random_crop(height: int, width: int, scale: np.ndarray, ratio: np.ndarray, key: int
                    ) -> tuple[int, int, int, int]:
        area = height * width
        lo, hi = np.log(ratio[0]), np.log(ratio[1])
        for attempt in range(CROP_ATTEMPTS):
            n = attempt * CROP_DRAWS_PER_ATTEMPT
            target = area * (scale[0] + (scale[1] - scale[0]) * unit(key, n))
            aspect = np.exp(lo + (hi - lo) * unit(key, n + 1))
            w = int(round(np.sqrt(target * aspect)))
            h = int(round(np.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(unit(key, n + 2) * (height - h + 1)), int(unit(key, n + 3) * (width - w + 1)), h, w
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = height, int(round(height * ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    return random_crop


@functools.cache
def keyed_crop_decoder_class() -> type:
    """The decoder class (built once, on first use: FFCV is imported lazily, see :mod:`workers.data._ffcv`)."""
    import_ffcv()
    from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
    from ffcv.libffcv import imdecode, resize_crop
    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler

    class KeyedRandomResizedCropDecoder(ResizedCropRGBImageDecoder):
        """Random resized crop (+ horizontal flip with ``flip_prob``) keyed by (seed, epoch, view, sample)."""

        def __init__(self, output_size: tuple[int, int], *, seed: int, view: int,
                     scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                     flip_prob: float = 0.5) -> None:
            super().__init__(output_size)
            self.scale, self.ratio, self.flip_prob = scale, ratio, flip_prob
            self.seed, self.view = int(seed), int(view)

        @property
        def get_crop_generator(self) -> Callable:  # FFCV's abstract hook; generate_code draws keyed crops
            return make_random_crop(make_draws())

        def declare_state_and_memory(self, previous_state: Any) -> tuple[Any, Any]:
            state, (image, scratch) = super().declare_state_and_memory(previous_state)
            return state, (image, scratch, AllocationQuery((1,), np.dtype("<i8")))

        def generate_code(self) -> Callable:
            jpg = IMAGE_MODES["jpg"]
            mem_read = self.memory_read
            my_range = Compiler.get_iterator()
            imdecode_c = Compiler.compile(imdecode)
            resize_crop_c = Compiler.compile(resize_crop)
            draws = make_draws(Compiler.compile)
            derive, unit = draws.derive, draws.unit
            crop_c = Compiler.compile(make_random_crop(draws))
            scale, ratio = np.array(self.scale), np.array(self.ratio)
            view, flip_prob = self.view, self.flip_prob
            job_key = seed_key(self.seed)

            def decode(batch_indices, my_storage, metadata, storage_state):  # noqa: ANN001, ANN202 - FFCV's
                destination, temp_storage, epoch_buffer = my_storage
                epoch_key = derive(derive(job_key, epoch_buffer[0, 0]), view)  # = draws.view_key
                for dst_ix in my_range(len(batch_indices)):
                    source_ix = batch_indices[dst_ix]
                    key = derive(derive(epoch_key, np.int64(source_ix)), CROP_STREAM)  # = draws.sample_keys
                    field = metadata[source_ix]
                    image_data = mem_read(field["data_ptr"], storage_state)
                    height, width = np.uint32(field["height"]), np.uint32(field["width"])
                    if field["mode"] == jpg:
                        temp_buffer = temp_storage[dst_ix]
                        imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                        temp_buffer = temp_buffer.reshape(-1)[:3 * height * width].reshape(height, width, 3)
                    else:
                        temp_buffer = image_data.reshape(height, width, 3)
                    i, j, h, w = crop_c(np.int64(height), np.int64(width), scale, ratio, key)
                    resize_crop_c(temp_buffer, i, i + h, j, j + w, destination[dst_ix])
                    if unit(key, FLIP_DRAW) < flip_prob:
                        image = destination[dst_ix]
                        image[:] = image[:, ::-1].copy()
                return destination[:len(batch_indices)]

            decode.is_parallel = True
            return decode

    return KeyedRandomResizedCropDecoder


def install_epoch_keys(loader: Any) -> None:
    """Make FFCV ``loader`` hand every keyed decoder the epoch it runs (see the module docstring)."""
    graph = loader.graph
    decoder_class = keyed_crop_decoder_class()
    node_ids = [node.id for node in graph.nodes if isinstance(getattr(node, "decoder", None), decoder_class)]
    if not node_ids:
        return
    allocate = graph.allocate_memory

    def allocate_memory(batch_size: int, batches_ahead: int) -> Any:
        buffers = allocate(batch_size, batches_ahead)
        epoch = loader.next_epoch - 1  # FFCV's Loader.__iter__ has moved on to the next epoch already
        for node_id in node_ids:
            buffers["operation"][node_id][_EPOCH_SLOT][...] = epoch
        return buffers

    graph.allocate_memory = allocate_memory
