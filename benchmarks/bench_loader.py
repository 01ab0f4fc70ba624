"""FFCV subset loader vs torchvision ImageFolder + DataLoader, images/second on the same images.

    .venv/bin/python -m benchmarks.bench_loader [--classes 20 --per-class 150 --workers 2 ...]

Both loaders read the same generated JPEGs (~256-500 px; FFCV from .beton files written from them)
with the same augmentation (random resized crop to 160 + horizontal flip, uint8 -> float32
normalised) and the same number of CPU workers (FFCV: JIT threads; torchvision: DataLoader worker
processes). Two FFCV stores by default: ``jpg:256`` (the ``dlth-orch data write`` default: JPEG q90,
longer side <= 256 px) and ``jpg:500`` (the same pixels as the source JPEGs, re-encoded).

- warm: epochs after a warm-up epoch (FFCV's numba compilation, worker start-up and the page cache all
  warm). The loaders take turns, round after round, so that load from other processes on a shared
  machine hits all of them alike; the median round is reported, and the best. Images per CPU-second
  (this process's threads plus the DataLoader's worker processes, from /proc) is also reported: it
  does not depend on what else runs on the machine.
- cold: an epoch right after dropping the page cache (``echo 3 > /proc/sys/vm/drop_caches``; FFCV's
  memory map is released first, and util-linux ``fincore`` shows how much was still cached).
  Needs root; otherwise the cold figures are reported as skipped.
"""

from __future__ import annotations

import argparse
import logging
import mmap
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
    p.add_argument("--stores", default="jpg:256,jpg:500",
                   help="FFCV stores to compare, MODE:MAX_RESOLUTION (MODE raw, jpg or proportion)")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--rounds", type=int, default=3, help="warm epochs per loader (taking turns)")
    p.add_argument("--no-cold", action="store_true", help="skip the cold-cache epochs")
    p.add_argument("--rewrite", action="store_true", help="write the .beton files again even if they exist")
    return p.parse_args(argv)


@dataclass
class Contender:
    """One loader under test and its figures."""

    name: str
    loader: Iterable
    files: list[Path]
    release: Callable[[], None] = lambda: None
    helper_pids: Callable[[], list[int]] = list  # processes besides this one that do its work
    warm: list[float] = field(default_factory=list)  # images/s
    warm_cpu: list[float] = field(default_factory=list)  # images per CPU-second
    cold: float | str | None = None

    def epoch(self) -> tuple[int, float, float]:
        """(images, wall seconds, CPU seconds of this process and the helpers) of one pass."""
        pids = [os.getpid(), *self.helper_pids()]
        n, cpu0, start = 0, cpu_seconds(pids), time.perf_counter()
        for images, _ in self.loader:
            n += (images[0] if isinstance(images, list) else images).shape[0]
        return n, time.perf_counter() - start, cpu_seconds(pids) - cpu0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


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


def dataloader_worker_pids(loader: torch.utils.data.DataLoader) -> list[int]:
    """PIDs of a persistent DataLoader's worker processes (none before its first epoch)."""
    it = loader._iterator  # noqa: SLF001 - the persistent iterator owns the workers
    return [w.pid for w in it._workers] if it is not None else []  # noqa: SLF001


def release_ffcv_mapping(loader: object) -> None:
    """Let the kernel drop the .beton's pages: unmap them from this process (MADV_DONTNEED)."""
    memmap = loader._loader.memory_manager.context.mmap  # noqa: SLF001 - FFCV keeps its np.memmap here
    if memmap is not None:
        memmap._mmap.madvise(mmap.MADV_DONTNEED)  # noqa: SLF001


def ffcv_contender(src: Path, store: str, args: argparse.Namespace) -> Contender:
    from subsets import resolve
    from subsets.meta import DatasetMeta
    from workers.data.loader import build_loader
    from workers.data.write import write_image_folder

    mode, res = store.split(":")
    out = args.work_dir / f"ffcv-{src.name}-{mode}{res}q{args.jpeg_quality}"
    t = time.perf_counter()
    if (out / "meta.json").is_file() and not args.rewrite:
        meta, how = DatasetMeta.load(out), "reused (--rewrite to time the write)"
    else:
        meta = write_image_folder(src, out, max_resolution=int(res), write_mode=mode, jpeg_quality=args.jpeg_quality,
                                  num_workers=args.workers, overwrite=True, progress=False)
        how = f"written in {time.perf_counter() - t:.1f} s with {args.workers} workers"
    beton = meta.beton_path("train")
    print(f"ffcv {store}: {beton.stat().st_size / 2**20:.0f} MiB .beton, {how}")
    loader = build_loader(meta, resolve("full", {"strategy": "full"}, meta), "train", recipe="supervised",
                          batch_size=args.batch_size, image_size=args.image_size, seed=0, train=True,
                          num_workers=args.workers)
    return Contender(f"ffcv {store}", loader, [beton], lambda: release_ffcv_mapping(loader))


def run_rounds(contenders: list[Contender], args: argparse.Namespace) -> None:
    for c in contenders:
        n, secs, _ = c.epoch()
        print(f"{c.name:16s} warm-up epoch: {n} images in {secs:.1f} s (JIT compilation / worker start-up)")
    for r in range(args.rounds):
        for c in contenders:
            n, secs, cpu = c.epoch()
            c.warm.append(n / secs)
            c.warm_cpu.append(n / cpu)
        print(f"round {r + 1}: " + ", ".join(f"{c.name} {c.warm[-1]:.0f}" for c in contenders) + " images/s")
    if args.no_cold:
        return
    for c in contenders:
        c.release()
        why = drop_page_cache()
        if why:
            c.cold = f"skipped: {why}"
            continue
        res = resident_fraction(c.files)
        n, secs, _ = c.epoch()
        c.cold = n / secs
        cached = "" if res is None else f" ({100 * res:.1f}% of its files still cached after the drop)"
        print(f"{c.name:16s} cold epoch: {n / secs:.0f} images/s{cached}")


def report(contenders: list[Contender], baseline: Contender) -> None:
    print("\n                 images/s: warm median  warm best     cold   images per CPU-second (median)")
    for c in contenders:
        cold = f"{c.cold:8.0f}" if isinstance(c.cold, float) else f"  {c.cold}"
        print(f"{c.name:16s} {statistics.median(c.warm):22.0f} {max(c.warm):10.0f} {cold} "
              f"{statistics.median(c.warm_cpu):12.0f}")
    for c in contenders:
        if c is baseline:
            continue
        warm = statistics.median(c.warm) / statistics.median(baseline.warm)
        best = max(c.warm) / max(baseline.warm)
        cpu = statistics.median(c.warm_cpu) / statistics.median(baseline.warm_cpu)
        line = f"ratio {c.name} / torchvision: warm {warm:.2f}x (best {best:.2f}x), per CPU-second {cpu:.2f}x"
        if isinstance(c.cold, float) and isinstance(baseline.cold, float):
            line += f", cold {c.cold / baseline.cold:.2f}x"
        print(line)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from workers.data.synthetic import make_synthetic_image_folder

    t = time.perf_counter()
    src = make_synthetic_image_folder(
        args.work_dir / f"src-{args.classes}x{args.per_class}-{args.min_size}-{args.max_size}", args.classes,
        args.per_class, 1, min_size=args.min_size, max_size=args.max_size, seed=0, num_workers=args.workers,
    )
    jpegs = sorted((src / "train").rglob("*.JPEG"))
    print(f"images: {len(jpegs)} train JPEGs of {args.min_size}-{args.max_size} px, "
          f"{sum(f.stat().st_size for f in jpegs) / 2**20:.0f} MiB ({time.perf_counter() - t:.0f} s to make/find)")
    contenders = [ffcv_contender(src, store, args) for store in args.stores.split(",")]
    tv_loader = torchvision_loader(src / "train", args)
    baseline = Contender("torchvision", tv_loader, jpegs, helper_pids=lambda: dataloader_worker_pids(tv_loader))
    contenders.append(baseline)
    print(f"loaders: batch {args.batch_size}, random resized crop {args.image_size} + flip + normalise, "
          f"{args.workers} CPU workers each, torch threads {torch.get_num_threads()}")
    run_rounds(contenders, args)
    report(contenders, baseline)


if __name__ == "__main__":
    main()
