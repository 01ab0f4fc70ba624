"""Subset loaders: FFCV loaders over a dataset's ``.beton`` that read only a manifest's samples.

``build_loader`` turns (dataset meta, subset manifest, split, recipe, batch size, distributed or not)
into a :class:`SubsetLoader` that yields ``(views, labels)``: ``views`` is a list of float32
N x 3 x H x W batches normalised with the ImageNet mean/std, in channels_last memory format (on the
CPU a zero-copy view of FFCV's NHWC buffer; on a GPU as models want it there), ``labels`` the int64
class indices remapped to 0..k-1 of the subset.

Decisions worth knowing:

- Order: training uses FFCV's ``OrderOption.RANDOM`` (a permutation drawn from ``seed + epoch``),
  evaluation ``SEQUENTIAL``. ``drop_last`` is set on purpose: True for training, False for eval.
- Distributed: every rank gets the same seed and a *disjoint* share (``order[rank::world]``) of the
  same per-epoch permutation. FFCV's own ``distributed=True`` pads the order with repeated samples
  (PyTorch's ``DistributedSampler(drop_last=False)``), so ranks would overlap; :class:`ShardedOrder`
  drops the few tail samples instead when training (different ones every epoch, and every rank gets
  the same number of batches), and leaves shares uneven by at most one sample for eval (the shares
  then cover the split exactly; the last rank may get one batch fewer).
- Repeatable: every random draw (crop, flip, colour ops) is keyed by (job seed, epoch, view, sample
  index) (:mod:`workers.data.draws`), and the order is a function of (seed, epoch): a job's batches are
  bit-identical whatever ``num_workers`` (numba threads), the JIT mode aside (compiled and plain float
  maths may round a crop differently), or the rank that reads a sample.
- Where the work happens: FFCV decodes, crops and flips in its JIT prefetch thread. On the CPU it also
  converts uint8 -> normalised float32 there (``NormalizeImage``; 1.5-2x the throughput of doing it in
  the consuming thread), so CPU image batches are FFCV's reused buffers: **valid until the next batch
  is requested** (``clone()`` what you keep). On a GPU the uint8 batch is copied to the device
  (``ToDevice(non_blocking=True)``) and converted there into fresh channels_last tensors (likewise on
  the CPU when FFCV's JIT is switched off, see ``workers.data.jit``). A recipe's batched ops (colour
  jitter, blur...) run on the batch's device after decoding. Labels are always fresh tensors.
- FFCV sets torch's intra-op thread count to its ``num_workers``; the loader restores the caller's.
- Sample indices: ``indices`` / ``sample_labels`` are the split's dataset indices and subset labels;
  during iteration ``batch_indices`` holds the dataset indices of the batch just yielded (FFCV's order is
  a deterministic function of seed and epoch, so it is recomputed here, batch by batch, in the order
  FFCV yields them). Methods that need per-sample facts (``semi_rotnet``'s labelled share) read it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from subsets.base import Manifest
from subsets.meta import DatasetMeta
from workers.data._ffcv import import_ffcv
from workers.data.draws import SampleDraws
from workers.data.keyed_crop import install_epoch_keys, keyed_crop_decoder_class
from workers.data.recipes import EVAL_CROP_RATIO, Recipe, ViewSpec, get_recipe

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN_255 = np.array(IMAGENET_MEAN) * 255
_STD_255 = np.array(IMAGENET_STD) * 255


def _sharded_order_class() -> type:
    import_ffcv()
    from ffcv.traversal_order.base import TraversalOrder

    class ShardedOrder(TraversalOrder):
        """This rank's disjoint share of a (shuffled) order; see the module docstring.

        FFCV 1.0.2 instantiates a custom order as ``order(loader)``, so an instance is passed in and
        ``__call__`` binds it to the loader.
        """

        def __init__(self, *, shuffle: bool, rank: int, world_size: int, even: bool) -> None:
            self.shuffle, self.rank, self.world_size, self.even = shuffle, rank, world_size, even

        def __call__(self, loader: Any) -> ShardedOrder:
            TraversalOrder.__init__(self, loader)
            return self

        def sample_order(self, epoch: int) -> np.ndarray:
            order = np.asarray(self.indices)
            if self.shuffle:
                order = np.random.default_rng(self.seed + epoch).permutation(order)
            if self.even:
                order = order[: len(order) - len(order) % self.world_size]
            return order[self.rank :: self.world_size]

    return ShardedOrder


def _dist_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("build_loader(distributed=True) needs torch.distributed to be initialised first")
    return dist.get_rank(), dist.get_world_size()


def _image_pipeline(view: ViewSpec, image_size: int, device: torch.device, *, seed: int = 0, index: int = 0) -> list:
    """FFCV ops of one view (the ``index``-th of its recipe; crops and flips keyed by ``seed``)."""
    import_ffcv()
    from ffcv.fields.decoders import CenterCropRGBImageDecoder
    from ffcv.pipeline.compiler import Compiler
    from ffcv.transforms import NormalizeImage, ToDevice, ToTensor, ToTorchImage

    size = view.output_size(image_size)
    if view.crop == "center":
        decoder = CenterCropRGBImageDecoder((size, size), ratio=EVAL_CROP_RATIO)
    else:
        decoder = keyed_crop_decoder_class()((size, size), seed=seed, view=index, scale=view.scale,
                                             ratio=view.ratio, flip_prob=0.5 if view.flip else 0.0)
    ops: list = [decoder]
    if device.type == "cpu" and Compiler.is_enabled:  # (its per-pixel loop is far too slow without the JIT)
        # to float32 in the JIT thread: normalised, or x / 255 when batched ops follow
        mean, std = (np.zeros(3), np.full(3, 255.0)) if view.ops else (_MEAN_255, _STD_255)
        return [*ops, NormalizeImage(mean, std, np.float32), ToTensor(), ToTorchImage(channels_last=True)]
    to_device = [ToDevice(device, non_blocking=True)] if device.type != "cpu" else []
    return [*ops, ToTensor(), *to_device, ToTorchImage(channels_last=True)]


class SubsetLoader:
    """Iterates ``(views, labels)`` batches of one split of one subset (a thin wrapper over FFCV's Loader)."""

    def __init__(self, ffcv_loader: Any, recipe: Recipe, label_map: np.ndarray, *, device: torch.device,
                 seed: int, rank: int, torch_threads: int, indices: np.ndarray | None = None,
                 sample_labels: np.ndarray | None = None) -> None:
        self._loader = ffcv_loader
        self.indices = indices if indices is not None else np.zeros(0, dtype=np.int64)
        self.sample_labels = sample_labels if sample_labels is not None else np.zeros(0, dtype=np.int64)
        self.batch_indices = np.zeros(0, dtype=np.int64)
        self.recipe = recipe
        self.num_views = recipe.num_views
        self.device = device
        self.batch_size = int(ffcv_loader.batch_size)
        self._seed, self._rank, self._torch_threads = seed, rank, torch_threads
        self._label_map = torch.as_tensor(label_map, dtype=torch.int64, device=device)
        names = list(ffcv_loader.pipeline_specs)
        self._label_pos = names.index("label")
        self._view_pos = [names.index("image" if v == 0 else f"image_{v}") for v in range(self.num_views)]
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(shape)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(shape)
        self._scale255 = 1.0 / (255.0 * self._std)
        self._bias = -self._mean / self._std

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self._loader)

    @property
    def num_samples(self) -> int:
        """Samples this rank yields per epoch."""
        n = len(self._loader.first_traversal_order)
        return len(self) * self.batch_size if self._loader.drop_last else n

    @property
    def epoch(self) -> int:
        """The epoch the next iteration runs."""
        return int(self._loader.next_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run ``epoch``'s order (a resumed run sees the same order)."""
        self._loader.next_epoch = int(epoch)

    def _finish(self, images: torch.Tensor, view: ViewSpec, draws: SampleDraws | None) -> torch.Tensor:
        """The view's batched ops and normalisation (see the module docstring for what FFCV already did).

        ``images`` is FFCV's float32 buffer when FFCV normalised on the CPU (to [0, 1] if the view has
        ops), else a uint8 channels_last batch on the device, converted here into a fresh tensor.
        """
        converted = images.dtype != torch.uint8
        if not view.ops:
            return images if converted else torch.addcmul(self._bias, images, self._scale255)  # one fused pass
        x = images if converted else images.to(torch.float32).mul_(1.0 / 255.0)
        for op in view.ops:
            x = op(x, draws)
        return x.sub_(self._mean).div_(self._std)

    def _draws(self, epoch: int, v: int, view: ViewSpec) -> SampleDraws | None:
        """The colour-op draws of view ``v`` for the batch just yielded (None: the view has no ops)."""
        if not view.ops:
            return None
        return SampleDraws.for_batch(self._seed, epoch, v, self.batch_indices, self.device)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        epoch = self.epoch
        order = np.asarray(self._loader.next_traversal_order())  # what FFCV's iterator draws for this epoch
        iterator = iter(self._loader)
        torch.set_num_threads(self._torch_threads)
        try:
            for b, batch in enumerate(iterator):
                self.batch_indices = order[b * self.batch_size:(b + 1) * self.batch_size]
                labels = self._label_map[batch[self._label_pos].to(torch.int64)]
                views = [
                    self._finish(batch[p], view, self._draws(epoch, v, view))
                    for v, (p, view) in enumerate(zip(self._view_pos, self.recipe.views, strict=True))
                ]
                yield views, labels
        finally:
            iterator.close()  # stops FFCV's prefetch thread when an epoch is left early


def build_loader(
    meta: DatasetMeta,
    manifest: Manifest,
    split: str,
    *,
    recipe: str,
    batch_size: int,
    image_size: int,
    seed: int,
    train: bool,
    distributed: bool = False,
    num_workers: int = 1,
    device: torch.device | str = "cpu",
) -> SubsetLoader:
    """An FFCV loader over ``manifest.indices[split]`` of ``meta``'s ``.beton`` (see the module docstring).

    ``batch_size`` is per rank. With ``distributed`` torch.distributed must already be initialised.
    """
    import_ffcv()
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.pipeline import PipelineSpec
    from ffcv.transforms import Squeeze, ToDevice, ToTensor

    if split not in meta.split_files or split not in manifest.indices:
        raise ValueError(f"split: expected one of {', '.join(sorted(manifest.indices))}, got {split!r}")
    if manifest.dataset_fingerprint != meta.fingerprint:
        raise ValueError(
            f"manifest {manifest.name!r} was resolved against dataset {manifest.dataset_fingerprint}, "
            f"not {meta.fingerprint} ({meta.root})"
        )
    if batch_size < 1 or image_size < 8 or num_workers < 1:
        raise ValueError("batch_size, num_workers: expected >= 1; image_size: expected >= 8")
    spec = get_recipe(recipe)
    dev = torch.device(device)
    indices = np.asarray(manifest.indices[split], dtype=np.int64)
    label_map = manifest.label_map(meta.num_classes)
    if len(indices) == 0:
        raise ValueError(f"subset {manifest.name!r} has no {split} samples")
    if (label_map[meta.labels[split][indices]] < 0).any():
        raise ValueError(f"subset {manifest.name!r}: {split} indices include samples of classes outside the subset")

    rank, world = _dist_rank_world() if distributed else (0, 1)
    if distributed:
        order: Any = _sharded_order_class()(shuffle=train, rank=rank, world_size=world, even=train)
    else:
        order = OrderOption.RANDOM if train else OrderOption.SEQUENTIAL
    if train and len(indices) // world < batch_size:
        raise ValueError(
            f"subset {manifest.name!r} has {len(indices)} {split} samples ({len(indices) // world} per rank), "
            f"fewer than one batch of {batch_size}: training would run no step (drop_last)"
        )

    label_ops: list = [IntDecoder(), ToTensor(), Squeeze()]
    if dev.type != "cpu":
        label_ops.append(ToDevice(dev, non_blocking=True))
    pipelines: dict[str, Any] = {"label": label_ops}
    for v, view in enumerate(spec.views):
        ops = _image_pipeline(view, image_size, dev, seed=seed, index=v)
        pipelines["image" if v == 0 else f"image_{v}"] = (
            ops if v == 0 else PipelineSpec("image", decoder=ops[0], transforms=ops[1:])
        )
    import numba

    if num_workers > numba.config.NUMBA_NUM_THREADS:  # numba refuses more threads than it was started with
        log.warning("num_workers %d > %d cores numba may use: using %d", num_workers,
                    numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)
        num_workers = numba.config.NUMBA_NUM_THREADS
    threads = torch.get_num_threads()
    loader = Loader(
        str(meta.beton_path(split)),
        batch_size=batch_size,
        num_workers=num_workers,
        order=order,
        os_cache=True,
        distributed=False,  # sharding is ShardedOrder's job (no padded duplicates)
        seed=seed,
        indices=indices,
        pipelines=pipelines,
        drop_last=train,
    )
    torch.set_num_threads(threads)
    install_epoch_keys(loader)
    return SubsetLoader(loader, spec, label_map, device=dev, seed=seed, rank=rank, torch_threads=threads,
                        indices=indices, sample_labels=label_map[meta.labels[split][indices]])
