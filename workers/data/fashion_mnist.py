"""Fashion-MNIST as a builtin dataset, read from Debian's ``dataset-fashion-mnist`` package.

The package ships the four standard IDX files (gzip) in ``/usr/share/datasets/fashion-mnist/``:
60,000 train and 10,000 test 28x28 grayscale product photos in 10 classes. Nothing is downloaded or
installed here: a missing package is one error line naming the apt command. The test split becomes
``val``. ``train_per_class`` / ``val_per_class`` keep only the first N images of each class (in file
order), for small studies. Images are resized to ``image_size`` and stored as raw RGB.

Class ids are WordNet 3.0 noun synsets (``n`` + 8-digit offset), so the hierarchy-based subset
strategies work on them: e.g. ``gym_shoe.n.01`` (sneaker), ``bag.n.04`` (handbag), ``boot.n.01``.
"""

from __future__ import annotations

import gzip
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from subsets.meta import META_FILE, SPLITS, ClassInfo, DatasetMeta, DatasetMetaError
from workers.data.beton import ImageOptions
from workers.data.errors import DataWriteError
from workers.data.write import write_dataset

log = logging.getLogger(__name__)

PACKAGE = "dataset-fashion-mnist"
SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
APT_HINT = f"the Debian package {PACKAGE} (install it: sudo apt-get install -y --no-install-recommends {PACKAGE})"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLIT_SIZES = {"train": 60000, "val": 10000}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # 0x00000803: ubyte, 3 dims; 0x00000801: ubyte, 1 dim
# (label, name from the dataset's README, WordNet 3.0 synset, its offset)
_CLASSES = (
    ("T-shirt/top", "jersey.n.03", 3595614),
    ("Trouser", "trouser.n.01", 4489008),
    ("Pullover", "pullover.n.01", 4021028),
    ("Dress", "dress.n.01", 3236735),
    ("Coat", "coat.n.01", 3057021),
    ("Sandal", "sandal.n.01", 4133789),
    ("Shirt", "shirt.n.01", 4197391),
    ("Sneaker", "gym_shoe.n.01", 3472535),
    ("Bag", "bag.n.04", 2774152),
    ("Ankle boot", "boot.n.01", 2872752),
)
FASHION_CLASSES = [ClassInfo(i, f"n{offset:08d}", name) for i, (name, _, offset) in enumerate(_CLASSES)]


def read_idx(path: str | Path, magic: int, limit: int | None = None) -> np.ndarray:
    """The uint8 array of a gzipped IDX file (first ``limit`` records only, if given).

    ``magic`` is the expected magic number (2051 for images, 2049 for labels). Any problem raises a
    :class:`DataWriteError` naming the file: missing, not gzip, truncated, wrong magic or short data.
    """
    path = Path(path)
    ndim = magic & 0xFF
    try:
        with gzip.open(path, "rb") as fh:
            head = fh.read(4 + 4 * ndim)
            if len(head) < 8:
                raise DataWriteError(path, "header", f"an IDX header (magic {magic}), got {len(head)} bytes")
            found = struct.unpack(">I", head[:4])[0]
            if found != magic:
                raise DataWriteError(path, "magic", f"the IDX magic number {magic} (0x{magic:08x}), got 0x{found:08x}")
            if len(head) < 4 + 4 * ndim:
                raise DataWriteError(path, "header", f"{ndim} IDX dimension sizes")
            dims = list(struct.unpack(f">{ndim}I", head[4:]))
            n = dims[0] if limit is None else min(limit, dims[0])
            record = int(np.prod(dims[1:], dtype=np.int64))
            data = fh.read(n * record)
    except FileNotFoundError:
        raise DataWriteError(path, "file", APT_HINT) from None
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataWriteError(path, "gzip", f"a complete gzip file ({type(exc).__name__}: {exc})") from None
    if len(data) != n * record:
        raise DataWriteError(path, "data", f"{n} records of {record} bytes, the file ends after {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8).reshape([n, *dims[1:]])


def first_per_class(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the first ``limit`` samples of each class (all if None), in file order."""
    if limit is None:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        keep[np.flatnonzero(labels == cls)[:limit]] = True
    return np.flatnonzero(keep)


def read_split(source_dir: str | Path, split: str, per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels int64) of one split, limited to the first ``per_class`` per class."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise DataWriteError(source_dir, "directory", APT_HINT)
    images_file, labels_file = (source_dir / f for f in FILES[split])
    labels = read_idx(labels_file, LABEL_MAGIC).astype(np.int64)
    if labels.size and labels.max() >= len(FASHION_CLASSES):
        raise DataWriteError(labels_file, "labels", f"class labels 0..{len(FASHION_CLASSES) - 1}")
    keep = first_per_class(labels, per_class)
    n_read = int(keep[-1]) + 1 if len(keep) else 0  # the images file is read only as far as needed
    images = read_idx(images_file, IMAGE_MAGIC, limit=n_read)
    if len(images) < n_read:
        raise DataWriteError(images_file, "records", f"{n_read} images (as many as {labels_file.name} has labels)")
    return images[keep], labels[keep]


@dataclass
class GraySource:
    """An :class:`~workers.data.beton.ImageSource` over grayscale uint8 images, resized to RGB on load."""

    images: np.ndarray  # N x H x W uint8
    labels: np.ndarray
    image_size: int
    tag: str

    @property
    def paths(self) -> list[str]:
        return [f"<{self.tag} sample {i}>" for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, i: int) -> np.ndarray:
        from PIL import Image

        img = self.images[i]
        if img.shape != (self.image_size, self.image_size):
            img = np.asarray(Image.fromarray(img).resize((self.image_size, self.image_size), Image.BICUBIC))
        return np.repeat(img[..., None], 3, axis=-1)


def fashion_name(image_size: int, train_per_class: int | None = None, val_per_class: int | None = None) -> str:
    """``fashion-mnist-32px``, or with limits ``fashion-mnist-32px-500x100`` (train x val per class)."""
    name = f"fashion-mnist-{image_size}px"
    if train_per_class is not None or val_per_class is not None:
        name += f"-{train_per_class or 'all'}x{val_per_class or 'all'}"
    return name


def _existing(root: Path, name: str) -> DatasetMeta | None:
    """The dataset at ``root`` if it is a complete Fashion-MNIST dataset called ``name``, else None."""
    if not (root / META_FILE).is_file():
        return None
    try:
        meta = DatasetMeta.load(root)
    except (DatasetMetaError, OSError, KeyError, ValueError) as exc:
        log.warning("%s: rebuilding the Fashion-MNIST dataset (%s)", root, exc)
        return None
    complete = meta.name == name and meta.classes == FASHION_CLASSES and all(
        meta.beton_path(s).is_file() and meta.beton_path(s).stat().st_size > 0 for s in SPLITS)
    return meta if complete else None


def prepare_fashion_mnist(
    root: str | Path,
    image_size: int = 28,
    *,
    train_per_class: int | None = None,
    val_per_class: int | None = None,
    source_dir: str | Path = SOURCE_DIR,
    progress: bool = False,
) -> DatasetMeta:
    """Write (or return the already written) Fashion-MNIST dataset in ``root``.

    Idempotent like :func:`workers.data.builtin.prepare_digits`: a complete dataset of the same name
    (size and limits) is returned untouched; files are written atomically, ``meta.json`` last.
    """
    root = Path(root)
    if image_size < 8:
        raise DataWriteError(root, "image_size", f"an integer >= 8, got {image_size}")
    for key, value in (("train_per_class", train_per_class), ("val_per_class", val_per_class)):
        if value is not None and value < 1:
            raise DataWriteError(root, key, f"an integer >= 1, got {value}")
    name = fashion_name(image_size, train_per_class, val_per_class)
    meta = _existing(root, name)
    if meta is not None:
        return meta
    limits = {"train": train_per_class, "val": val_per_class}
    sources = {}
    for split in SPLITS:
        images, labels = read_split(source_dir, split, limits[split])
        sources[split] = GraySource(images, labels, image_size, f"fashion-mnist {split}")
    options = ImageOptions(max_resolution=image_size, write_mode="raw")
    meta, _ = write_dataset(root, FASHION_CLASSES, sources, options, page_size=2**21, num_workers=1,
                            progress=progress, name=name)
    log.info("wrote the Fashion-MNIST dataset to %s (%d train, %d val)", root, len(meta.labels["train"]),
             len(meta.labels["val"]))
    return meta
