"""Sharded evaluation (every DDP rank extracts its share) vs the whole evaluation on one rank.

    .venv/bin/python -m benchmarks.bench_knn_eval [--world 2 --backbone resnet18 --image-size 64 --repeats 3]

Both sides run ``Trainer.evaluate`` (kNN bank = the subset's training split, queries = its validation
split, plus the supervised head's top-1) on the real handwritten-digits dataset, with one torch thread
and one loader thread per process:

- baseline: one process evaluates everything. Before sharding this is what rank 0 did while the other
  ranks waited, so its wall time is what a DDP job spent per evaluation.
- sharded: ``--world`` processes under gloo, each extracting its share and merging the kNN neighbours.

On GPUs the ratio should approach the number of ranks (features stay on each GPU, no rank holds the
whole bank); on this CPU it is bounded by the cores. The metrics of both sides are printed for a check.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as tmp_mp

GRID = """
name = "bench-knn"
seeds = [0]
[dataset]
root = "{root}"
[train]
backbone = "{backbone}"
epochs = 1
image_size = {image_size}
[eval]
knn_k = 20
[resources]
loader_workers = 1
[subsets.full]
strategy = "full"
[methods.supervised]
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, default=Path("data/bench_knn_eval"), help="dataset (reused)")
    p.add_argument("--world", type=int, default=2, help="ranks of the sharded side")
    p.add_argument("--backbone", default="resnet18", help="timm model name")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed evaluations per side (after one warm-up)")
    return p.parse_args(argv)


def _rank_main(rank: int, world: int, init_file: str, grid_file: str, repeats: int, out_dir: str) -> None:
    """One rank: evaluate once to warm up, then ``repeats`` timed evaluations."""
    torch.set_num_threads(1)
    from orchestrator.grid import expand, load_grid
    from subsets import DatasetMeta
    from workers.data.jit import configure_jit
    from workers.distributed import DistContext, barrier
    from workers.train import Trainer, build_method, load_manifest, seed_everything

    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank=rank, local_rank=rank, world_size=world, device=torch.device("cpu"))
        grid = load_grid(grid_file)
        (job,) = expand(grid, DatasetMeta.load(grid.dataset_root))
        meta, manifest = load_manifest(job.spec)
        configure_jit(job.spec.resources.ffcv_jit, len(manifest.indices["train"]))
        torch.set_num_threads(1)
        seed_everything(0, rank)
        method = build_method(job.spec, manifest.num_classes)
        trainer = Trainer(job.spec, Path(out_dir), ctx, None, threading.Event())
        metrics = trainer.evaluate(method, meta, manifest)
        times = []
        for _ in range(repeats):
            barrier(ctx)
            t0 = time.perf_counter()
            metrics = trainer.evaluate(method, meta, manifest)
            times.append(time.perf_counter() - t0)
        if rank == 0:
            torch.save({"times": times, "metrics": metrics}, Path(out_dir) / f"world{world}.pt")
    finally:
        if world > 1:
            dist.destroy_process_group()


def run_side(world: int, grid_file: Path, repeats: int, out_dir: Path) -> dict:
    tmp_mp.spawn(_rank_main, args=(world, str(out_dir / f"pg{world}"), str(grid_file), repeats, str(out_dir)),
                 nprocs=world)
    return torch.load(out_dir / f"world{world}.pt")


def main(argv: list[str] | None = None) -> None:
    from workers.data.builtin import prepare_digits

    args = parse_args(argv)
    root = args.work_dir / f"digits{args.image_size}"
    prepare_digits(root, image_size=args.image_size)  # idempotent: reused once written
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        grid_file = out / "grid.toml"
        grid_file.write_text(GRID.format(root=root.resolve(), backbone=args.backbone, image_size=args.image_size))
        base = run_side(1, grid_file, args.repeats, out)
        sharded = run_side(args.world, grid_file, args.repeats, out)
    b, s = statistics.median(base["times"]), statistics.median(sharded["times"])
    print(f"evaluation of {args.backbone} at {args.image_size}px on digits (1 thread per process), "
          f"median of {args.repeats}:")
    print(f"  one rank evaluates all (baseline): {b:7.2f} s   {base['metrics']}")
    print(f"  {args.world} ranks, sharded:             {s:7.2f} s   {sharded['metrics']}")
    print(f"  sharded vs baseline: {b / s:.2f}x faster")


if __name__ == "__main__":
    main()
