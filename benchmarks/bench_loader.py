"""FFCV subset loader vs torchvision ImageFolder + DataLoader, images/second on the same images.

    .venv/bin/python -m benchmarks.bench_loader [--classes 20 --per-class 150 --workers 2 ...]

Both loaders read the same generated JPEGs (~256-500 px; FFCV from the .beton written from them) with
the same augmentation (random resized crop to 160 + horizontal flip, uint8 -> float32 normalised) and
the same number of CPU workers (FFCV: JIT threads; torchvision: DataLoader worker processes).

- warm: an epoch after a warm-up epoch (FFCV's numba compilation, worker start-up and the page cache
  are all warm).
- cold: an epoch right after dropping the page cache (``echo 3 > /proc/sys/vm/drop_caches``; FFCV's
  memory map is released first). Needs root; otherwise the cold figures are reported as skipped.

Prints every figure and the ratio FFCV / torchvision.
"""

from __future__ import annotations

import argparse
import logging
import mmap
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, default=Path("data/bench_loader"), help="generated data (reused)")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--per-class", type=int, default=150, help="train images per class")
    p.add_argument("--min-size", type=int, default=256)
    p.add_argument("--max-size", type=int, default=500)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--max-resolution", type=int, default=None,
                   help="longer side stored in the .beton [default: --max-size, i.e. the same pixels]")
    p.add_argument("--write-mode", choices=["raw", "jpg", "proportion"], default="jpg")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--no-cold", action="store_true", help="skip the cold-cache epochs")
    return p.parse_args(argv)


def timed_epoch(batches: Iterable) -> tuple[int, float]:
    """(images, seconds) of one pass over ``batches``."""
    n, start = 0, time.perf_counter()
    for images, _ in batches:
        n += (images[0] if isinstance(images, list) else images).shape[0]
    return n, time.perf_counter() - start


def drop_page_cache() -> str | None:
    """Drop the page cache; return why not if it cannot be done."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError as exc:
        return f"cannot write {DROP_CACHES} ({exc.strerror})"
    return None


def resident_fraction(files: list[Path]) -> float | None:
    """Share of the files' pages in the page cache (util-linux fincore), None if unavailable."""
    if not shutil.which("fincore") or not files:
        return None
    out = subprocess.run(["fincore", "-b", "-n", "-o", "RES,SIZE", *map(str, files)],
                         capture_output=True, text=True, check=False).stdout.split()
    res, size = [int(v) for v in out[0::2]], [int(v) for v in out[1::2]]
    return sum(res) / max(1, sum(size))


def torchvision_loader(root: Path, args: argparse.Namespace) -> torch.utils.data.DataLoader:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    from workers.data.loader import IMAGENET_MEAN, IMAGENET_STD

    transform = v2.Compose([
        v2.RandomResizedCrop(args.image_size, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    dataset = ImageFolder(str(root), transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                       num_workers=args.workers, persistent_workers=True)


def release_ffcv_mapping(loader: object) -> None:
    """Let the kernel drop the .beton's pages: unmap them from this process (MADV_DONTNEED)."""
    memmap = loader._loader.memory_manager.context.mmap  # noqa: SLF001 - FFCV keeps its np.memmap here
    if memmap is not None:
        memmap._mmap.madvise(mmap.MADV_DONTNEED)  # noqa: SLF001


def measure(name: str, loader: Iterable, files: list[Path], before_cold: Callable[[], None],
            cold: bool) -> dict[str, float | str]:
    """Warm-up, warm and cold epochs of ``loader`` (re-iterable), printed and returned (images/s)."""
    out: dict[str, float | str] = {}
    n, secs = timed_epoch(loader)
    out["first epoch s"] = secs
    print(f"{name:12s} warm-up epoch: {n} images in {secs:.1f} s (compilation / worker start-up included)")
    n, secs = timed_epoch(loader)
    out["warm"] = n / secs
    print(f"{name:12s} warm:  {n / secs:8.0f} images/s ({n} images in {secs:.1f} s)")
    if cold:
        before_cold()
        why = drop_page_cache()
        if why:
            out["cold"] = f"skipped: {why}"
            print(f"{name:12s} cold:  skipped ({why})")
        else:
            res = resident_fraction(files)
            n, secs = timed_epoch(loader)
            out["cold"] = n / secs
            cached = "" if res is None else f", {100 * res:.1f}% of its files cached before"
            print(f"{name:12s} cold:  {n / secs:8.0f} images/s ({n} images in {secs:.1f} s{cached})")
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from subsets.base import resolve
    from workers.data.loader import build_loader
    from workers.data.synthetic import make_synthetic_image_folder
    from workers.data.write import write_image_folder

    max_res = args.max_resolution or args.max_size
    work = args.work_dir
    t = time.perf_counter()
    src = make_synthetic_image_folder(work / f"src-{args.classes}x{args.per_class}-{args.min_size}-{args.max_size}",
                                      args.classes, args.per_class, 1, min_size=args.min_size,
                                      max_size=args.max_size, seed=0, num_workers=args.workers)
    jpegs = sorted((src / "train").rglob("*.JPEG"))
    print(f"images: {len(jpegs)} train JPEGs of {args.min_size}-{args.max_size} px, "
          f"{sum(f.stat().st_size for f in jpegs) / 2**20:.0f} MiB ({time.perf_counter() - t:.0f} s to make/find)")
    t = time.perf_counter()
    meta = write_image_folder(src, work / f"ffcv-{src.name}-{args.write_mode}{max_res}q{args.jpeg_quality}",
                              max_resolution=max_res, write_mode=args.write_mode, jpeg_quality=args.jpeg_quality,
                              num_workers=args.workers, overwrite=True, progress=False)
    beton = meta.beton_path("train")
    print(f"ffcv write: {beton.stat().st_size / 2**20:.0f} MiB .beton ({args.write_mode}, max {max_res} px) "
          f"in {time.perf_counter() - t:.1f} s with {args.workers} workers")
    print(f"loaders: batch {args.batch_size}, random resized crop {args.image_size} + flip + normalise, "
          f"{args.workers} CPU workers each, torch threads {torch.get_num_threads()}")

    full = resolve("full", {"strategy": "full"}, meta)
    ffcv_loader = build_loader(meta, full, "train", recipe="supervised", batch_size=args.batch_size,
                               image_size=args.image_size, seed=0, train=True, num_workers=args.workers)
    res_ffcv = measure("ffcv", ffcv_loader, [beton], lambda: release_ffcv_mapping(ffcv_loader), not args.no_cold)
    tv_loader = torchvision_loader(src / "train", args)
    res_tv = measure("torchvision", tv_loader, jpegs, lambda: None, not args.no_cold)

    for key in ("warm", "cold"):
        a, b = res_ffcv.get(key), res_tv.get(key)
        if isinstance(a, float) and isinstance(b, float):
            print(f"ratio ffcv/torchvision ({key}): {a / b:.2f}x  ({a:.0f} vs {b:.0f} images/s)")


if __name__ == "__main__":
    main()
