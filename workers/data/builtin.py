"""Builtin datasets (:data:`BUILTINS`): ``digits`` here, ``fashion-mnist`` in :mod:`workers.data.fashion_mnist`.

``digits``, the smallest real dataset:

scikit-learn bundles ``load_digits``: 1,797 real 8x8 handwritten digits in 10 classes. They are
upscaled to ``image_size`` RGB, split ~80/20 (stratified, seeded) and written like any other dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from subsets.meta import META_FILE, SPLITS, ClassInfo, DatasetMeta, DatasetMetaError
from workers.data.beton import ImageOptions
from workers.data.errors import DataWriteError
from workers.data.write import write_dataset

log = logging.getLogger(__name__)

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_CLASSES = [ClassInfo(i, f"digit{i}", name) for i, name in enumerate(DIGIT_NAMES)]
VAL_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass
class ArraySource:
    """An :class:`~workers.data.beton.ImageSource` over in-memory uint8 images."""

    images: np.ndarray  # N x H x W x 3 uint8
    labels: np.ndarray

    @property
    def paths(self) -> list[str]:
        return [f"<digit sample {i}>" for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, i: int) -> np.ndarray:
        return self.images[i]


def digits_name(image_size: int) -> str:
    return f"digits-{image_size}px"


def _existing(root: Path, image_size: int) -> DatasetMeta | None:
    """The dataset at ``root`` if it is a complete digits dataset of this size, else None."""
    if not (root / META_FILE).is_file():
        return None
    try:
        meta = DatasetMeta.load(root)
    except (DatasetMetaError, OSError, KeyError, ValueError) as exc:
        log.warning("%s: rebuilding the digits dataset (%s)", root, exc)
        return None
    complete = (
        meta.name == digits_name(image_size)
        and meta.classes == DIGIT_CLASSES
        and sum(len(v) for v in meta.labels.values()) == 1797
        and all(meta.beton_path(s).is_file() and meta.beton_path(s).stat().st_size > 0 for s in SPLITS)
    )
    return meta if complete else None


def digits_images(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as N x image_size x image_size x 3 uint8 (bright strokes on black), and labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    small = np.clip(data.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # values 0..16
    big = np.stack([
        np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BICUBIC)) for im in small
    ])
    return np.repeat(big[..., None], 3, axis=-1), data.target.astype(np.int64)


def digits_labels() -> np.ndarray:
    """The 1,797 digits' labels, as ``load_digits().target``: read from the CSV scikit-learn ships (its last
    column), without importing scikit-learn (seconds) when the file is where scikit-learn keeps it."""
    import gzip
    from importlib.util import find_spec

    spec = find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        csv = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            with gzip.open(csv, "rt") as fh:
                return np.array([int(float(line.rsplit(",", 1)[1])) for line in fh if line.strip()], dtype=np.int64)
    from sklearn.datasets import load_digits

    return load_digits().target.astype(np.int64)


def digits_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Seeded, stratified ~80/20 split of sample indices; each split sorted by (class, index)."""
    rng = np.random.default_rng(SPLIT_SEED)
    out: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(VAL_FRACTION * len(members)))
        out["val"].append(np.sort(members[:n_val]))
        out["train"].append(np.sort(members[n_val:]))
    return {s: np.concatenate(v) for s, v in out.items()}


def prepare_digits(root: str | Path, image_size: int = 32, *, progress: bool = False) -> DatasetMeta:
    """Write (or return the already written) digits dataset in ``root``.

    Idempotent: a complete dataset of the same size is returned without touching it. Files are
    written under temporary names and ``meta.json`` last, so an interrupted call leaves no dataset
    (and the next call builds it).
    """
    root = Path(root)
    if image_size < 8:
        raise ValueError(f"image_size: expected an integer >= 8, got {image_size}")
    meta = _existing(root, image_size)
    if meta is not None:
        return meta
    images, labels = digits_images(image_size)
    split = digits_split(labels)
    sources = {s: ArraySource(images[split[s]], labels[split[s]]) for s in SPLITS}
    options = ImageOptions(max_resolution=image_size, write_mode="raw")
    meta, _ = write_dataset(
        root, DIGIT_CLASSES, sources, options, page_size=2**21, num_workers=1,
        progress=progress, name=digits_name(image_size),
    )
    log.info("wrote the digits dataset to %s (%d train, %d val)", root, len(meta.labels["train"]),
             len(meta.labels["val"]))
    return meta


def _no_digits_options(root: Path, options: dict[str, Any]) -> None:
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        raise DataWriteError(root, given[0], "no such option for the digits (they are only 1,797 images)")


def _prepare_digits_builtin(root: Path, image_size: int, *, progress: bool = False, **options: Any) -> DatasetMeta:
    _no_digits_options(root, options)
    return prepare_digits(root, image_size, progress=progress)


def _prepare_fashion_builtin(root: Path, image_size: int, *, progress: bool = False, **options: Any) -> DatasetMeta:
    from workers.data.fashion_mnist import prepare_fashion_mnist

    return prepare_fashion_mnist(root, image_size, progress=progress, **options)


BUILTINS: dict[str, Callable[..., DatasetMeta]] = {
    "digits": _prepare_digits_builtin,
    "fashion-mnist": _prepare_fashion_builtin,
}
"""The builtin datasets (``[dataset] prepare = NAME``): NAME -> preparer(root, image_size, ...)."""


def prepare_builtin(
    name: str, root: str | Path, image_size: int = 32, *, train_per_class: int | None = None,
    val_per_class: int | None = None, progress: bool = False, **options: Any,
) -> DatasetMeta:
    """Write (or return the already written) builtin dataset ``name`` in ``root`` (idempotent).

    ``options`` go to the preparer (``source_dir`` for fashion-mnist).
    """
    if name not in BUILTINS:
        raise DataWriteError(root, "prepare", "one of " + ", ".join(BUILTINS))
    return BUILTINS[name](Path(root), image_size, progress=progress, train_per_class=train_per_class,
                          val_per_class=val_per_class, **options)


def builtin_labels(name: str, root: str | Path, image_size: int = 32, *, train_per_class: int | None = None,
                   val_per_class: int | None = None, **options: Any) -> DatasetMeta:
    """The metadata :func:`prepare_builtin` would write for builtin ``name`` (classes and every sample's
    label, hence the fingerprint), computed from the labels alone: nothing is written or decoded. For a
    dry run of a grid whose builtin dataset is not built yet."""
    root = Path(root).resolve()
    files = {s: f"{s}.beton" for s in SPLITS}
    if name == "digits":
        _no_digits_options(root, {"train_per_class": train_per_class, "val_per_class": val_per_class, **options})
        labels = digits_labels()
        split = digits_split(labels)
        return DatasetMeta(root, digits_name(image_size), DIGIT_CLASSES, files, {s: labels[split[s]] for s in SPLITS})
    if name == "fashion-mnist":
        from workers.data.fashion_mnist import (
            FASHION_CLASSES,
            FILES,
            LABEL_MAGIC,
            SOURCE_DIR,
            fashion_name,
            first_per_class,
            read_idx,
        )

        source = Path(options.get("source_dir") or SOURCE_DIR)
        limits = {"train": train_per_class, "val": val_per_class}
        split_labels = {}
        for s in SPLITS:
            labels = read_idx(source / FILES[s][1], LABEL_MAGIC).astype(np.int64)
            split_labels[s] = labels[first_per_class(labels, limits[s])]
        return DatasetMeta(root, fashion_name(image_size, train_per_class, val_per_class), FASHION_CLASSES, files,
                           split_labels)
    raise DataWriteError(root, "prepare", "one of " + ", ".join(BUILTINS))
