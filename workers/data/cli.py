"""``dlth-orch data ...``: write datasets. torch and FFCV are imported only inside the commands.

Mounted by the main CLI with ``from workers.data.cli import data``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

import click


def _one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a DataWriteError into a one-line message on stderr and exit code 2."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        from workers.data.errors import DataWriteError

        _setup_logging()
        try:
            return fn(*args, **kwargs)
        except DataWriteError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(2) from None

    return run


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        from rich.logging import RichHandler

        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])


@click.group("data")
def data() -> None:
    """Write datasets (FFCV .beton files + class metadata) for subset training."""


@data.command("write")
@click.argument("src", type=click.Path(path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--max-resolution", type=int, default=256, show_default=True,
              help="Longer image side in pixels; larger images are downscaled.")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=90, show_default=True)
@click.option("--write-mode", type=click.Choice(["raw", "jpg", "proportion"]), default="jpg", show_default=True,
              help="raw pixels, JPEG, or JPEG for a random --compress-probability share of the images.")
@click.option("--compress-probability", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of JPEG-compressed images with --write-mode proportion.")
@click.option("--page-size", type=int, default=4 * 2**20, show_default=True,
              help="FFCV page size in bytes: a power of two >= 2 MiB (larger pages make small files larger).")
@click.option("--num-workers", type=int, default=None, help="Writer processes [default: all usable cores].")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images and empty class folders instead of failing.")
@click.option("--overwrite", is_flag=True, help="Replace a dataset already written in OUT.")
@click.option("--name", default=None, help="Dataset name in meta.json [default: the name of OUT].")
@_one_line_errors
def write_cmd(src: str, out: str, max_resolution: int, jpeg_quality: int, write_mode: str,
              compress_probability: float, page_size: int, num_workers: int | None, skip_bad: bool,
              overwrite: bool, name: str | None) -> None:
    """Convert the image folder SRC (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) into a dataset in OUT."""
    from workers.data.write import write_image_folder

    meta = write_image_folder(
        src, out, max_resolution=max_resolution, jpeg_quality=jpeg_quality, write_mode=write_mode,
        compress_probability=compress_probability, page_size=page_size, num_workers=num_workers,
        skip_bad=skip_bad, overwrite=overwrite, name=name,
    )
    click.echo(f"{meta.root}: {meta.num_classes} classes, {len(meta.labels['train'])} train and "
               f"{len(meta.labels['val'])} val images (fingerprint {meta.fingerprint})")


@data.command("prepare-digits")
@click.argument("root", type=click.Path(path_type=str))
@click.option("--image-size", type=click.IntRange(8, 1024), default=32, show_default=True)
@_one_line_errors
def prepare_digits_cmd(root: str, image_size: int) -> None:
    """Write scikit-learn's 1,797 handwritten digits (10 classes) as a dataset in ROOT (idempotent)."""
    from workers.data.builtin import prepare_digits

    meta = prepare_digits(root, image_size=image_size, progress=True)
    click.echo(f"{meta.root}: {meta.num_classes} classes, {len(meta.labels['train'])} train and "
               f"{len(meta.labels['val'])} val images (fingerprint {meta.fingerprint})")


@data.command("prepare")
@click.argument("name", type=click.Choice(["digits", "fashion-mnist"]))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--image-size", type=click.IntRange(8, 1024), default=None,
              help="Image side in pixels [default: 32 for digits, 28 for fashion-mnist].")
@click.option("--train-per-class", type=click.IntRange(1), default=None,
              help="Keep only the first N training images of each class [default: all].")
@click.option("--val-per-class", type=click.IntRange(1), default=None,
              help="Keep only the first N validation images of each class [default: all].")
@click.option("--source", type=click.Path(path_type=str), default=None,
              help="fashion-mnist: folder of the four IDX .gz files [default: /usr/share/datasets/fashion-mnist].")
@_one_line_errors
def prepare_cmd(name: str, out: str, image_size: int | None, train_per_class: int | None,
                val_per_class: int | None, source: str | None) -> None:
    """Write the builtin dataset NAME in OUT (idempotent; fashion-mnist reads Debian's dataset-fashion-mnist)."""
    from workers.data.builtin import prepare_builtin

    size = image_size or (28 if name == "fashion-mnist" else 32)
    extra = {"source_dir": source} if source else {}
    meta = prepare_builtin(name, out, size, train_per_class=train_per_class, val_per_class=val_per_class,
                           progress=True, **extra)
    click.echo(f"{meta.root}: {meta.num_classes} classes, {len(meta.labels['train'])} train and "
               f"{len(meta.labels['val'])} val images (fingerprint {meta.fingerprint})")


@data.command("make-synthetic")
@click.argument("out", type=click.Path(path_type=str))
@click.option("--classes", "num_classes", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--train-per-class", type=click.IntRange(1), default=100, show_default=True)
@click.option("--val-per-class", type=click.IntRange(1), default=20, show_default=True)
@click.option("--min-size", type=int, default=256, show_default=True)
@click.option("--max-size", type=int, default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_one_line_errors
def make_synthetic_cmd(out: str, num_classes: int, train_per_class: int, val_per_class: int, min_size: int,
                       max_size: int, seed: int) -> None:
    """Generate a synthetic JPEG image folder in OUT whose classes are real ImageNet wnids."""
    from workers.data.synthetic import make_synthetic_image_folder

    path = make_synthetic_image_folder(out, num_classes, train_per_class, val_per_class, min_size=min_size,
                                       max_size=max_size, seed=seed)
    click.echo(f"{path}: {num_classes} classes x ({train_per_class} train + {val_per_class} val) JPEGs")
