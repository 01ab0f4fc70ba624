"""Training throughput of every method, and our training loop against a plain PyTorch loop.

    .venv/bin/python -m benchmarks.bench_train [--epochs 1 --backbone test_resnet --image-size 32 ...]

1. Every method on the same backbone and data (the digits, ``--image-size`` px; MAE on ``--vit``, since
   it needs a ViT, and its ratio is against supervised on that ViT): training images/s of the real
   Trainer (``workers.train.Trainer``, one rank, in-process; the images/s its epoch metrics report),
   as a ratio to ``supervised``. A method's images/s counts source images (a 2-view method encodes
   twice as many crops).
2. Our loop (``supervised`` through the Trainer: FFCV loader, recipe, schedule, checkpoint per epoch)
   against a plain PyTorch loop: torchvision ``ImageFolder`` + ``DataLoader`` over PNG files of the same
   images, the same model (timm backbone + linear head), the same augmentation (random resized crop
   0.08-1 + flip + normalise), SGD, the same batch size and number of loader workers.

Both measure whole epochs after a warm-up epoch (numba compilation, worker start-up, page cache).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specs.job import EvalConfig, JobSpec, Resources, TrainConfig
from subsets import DatasetMeta, resolve
from workers.distributed import DistContext

log = logging.getLogger("bench_train")
CTX = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
# small heads, as in examples/methods_digits.toml
HPARAMS: dict[str, dict[str, Any]] = {
    "supervised": {}, "simclr": {"proj_hidden_dim": 128, "proj_dim": 64},
    "mocov1": {"queue_size": 1024, "dim": 64}, "mocov2": {"queue_size": 1024, "dim": 64},
    "mocov3": {"hidden_dim": 256, "dim": 64}, "byol": {"hidden_dim": 256, "dim": 64},
    "dino": {"out_dim": 1024, "hidden_dim": 256, "bottleneck_dim": 64, "local_crops": 2},
    "rotnet": {}, "exemplar": {"crops": 4, "dim": 64}, "semi_rotnet": {"labeled_fraction": 0.1},
    "mae": {"decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 2},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, default=Path("data/bench_train"))
    p.add_argument("--backbone", default="test_resnet")
    p.add_argument("--vit", default="test_vit", help="backbone of MAE (ViT only)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is the warm-up")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--methods", default=",".join(HPARAMS))
    p.add_argument("--fraction", type=float, default=1.0, help="of each class's training images (both loops)")
    return p.parse_args(argv)


class _Capture:
    """Stands in for the JobReporter: keeps the Trainer's per-epoch values."""

    def __init__(self) -> None:
        self.values: list[dict[str, float]] = []

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.values.append(values)


def trainer_images_per_s(root: Path, method: str, backbone: str, args: argparse.Namespace, job_dir: Path) -> float:
    """Images/s of the last epoch of the real Trainer (the first epochs are warm-up)."""
    from workers.train import Trainer

    meta = DatasetMeta.load(root)
    subset = {"strategy": "full", **({"fraction": args.fraction} if args.fraction < 1 else {})}
    manifest = resolve("full", subset, meta)
    train = TrainConfig(backbone=backbone, epochs=args.epochs, batch_size=args.batch_size, lr=0.05,
                        image_size=args.image_size, optimizer="sgd" if backbone != args.vit else "adamw")
    spec = JobSpec(grid="bench", dataset_root=str(root), dataset_fingerprint=meta.fingerprint, subset_name="full",
                   subset=subset, manifest_hash=manifest.content_hash, config_name=method, method=method,
                   hparams=HPARAMS[method], train=train, eval=EvalConfig(), seed=0,
                   resources=Resources(loader_workers=args.workers))
    shutil.rmtree(job_dir, ignore_errors=True)  # a checkpoint left by an earlier run would resume
    job_dir.mkdir(parents=True)
    capture = _Capture()
    Trainer(spec, job_dir, CTX, capture, threading.Event()).run()  # type: ignore[arg-type]
    return capture.values[-1]["images_per_s"]


def write_png_folder(root: Path, image_size: int, manifest_train: Any) -> Path:
    """The subset's training images as PNG files in an ImageFolder layout (the plain loop reads these)."""
    from PIL import Image

    from workers.data.builtin import digits_images, digits_split

    folder = root / "png_train"
    shutil.rmtree(folder, ignore_errors=True)
    images, labels = digits_images(image_size)
    train = digits_split(labels)["train"]  # the dataset's train split, in its sample order
    for i in train[np.asarray(manifest_train)]:
        out = folder / f"{labels[i]}"
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(out / f"{i:05d}.png")
    return folder


def plain_images_per_s(folder: Path, backbone: str, args: argparse.Namespace) -> float:
    """Images/s of the last epoch of a plain torchvision + PyTorch supervised loop."""
    import timm
    from torchvision import datasets, transforms

    from workers.data.loader import IMAGENET_MEAN, IMAGENET_STD

    tf = transforms.Compose([
        transforms.RandomResizedCrop(args.image_size, scale=(0.08, 1.0)), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    data = datasets.ImageFolder(str(folder), transform=tf)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0)
    torch.manual_seed(0)
    model = timm.create_model(backbone, pretrained=False, num_classes=len(data.classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rate = 0.0
    for _ in range(args.epochs):
        model.train()
        start, n = time.perf_counter(), 0
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += y.shape[0]
        rate = n / (time.perf_counter() - start)
    return rate


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    from workers.data.builtin import prepare_digits

    root = args.work_dir / "digits"
    prepare_digits(root, image_size=args.image_size)
    methods = [m for m in args.methods.split(",") if m]
    rates: dict[str, float] = {}
    for method in methods:
        backbone = args.vit if method == "mae" else args.backbone
        rates[method] = trainer_images_per_s(root, method, backbone, args, args.work_dir / "jobs" / method)
        log.warning("%s: %.1f img/s", method, rates[method])  # progress (the table comes at the end)
    base = rates.get("supervised")
    if "mae" in methods:
        rates["supervised@vit"] = trainer_images_per_s(root, "supervised", args.vit, args,
                                                       args.work_dir / "jobs" / "supervised_vit")
    print(f"training images/s, {args.backbone} at {args.image_size} px, batch {args.batch_size}, "
          f"{args.workers} loader worker(s), CPU ({torch.get_num_threads()} threads)")
    for method in methods:
        ref = rates["supervised@vit"] if method == "mae" else base
        note = f" ({args.vit}, vs supervised on it)" if method == "mae" else ""
        ratio = f"{rates[method] / ref:.2f}x supervised" if ref else "n/a"
        print(f"  {method:12s} {rates[method]:8.1f} img/s  {ratio}{note}")
    meta = DatasetMeta.load(root)
    subset = {"strategy": "full", **({"fraction": args.fraction} if args.fraction < 1 else {})}
    folder = write_png_folder(args.work_dir, args.image_size, resolve("full", subset, meta).indices["train"])
    plain = plain_images_per_s(folder, args.backbone, args)
    ours = base if base is not None else trainer_images_per_s(root, "supervised", args.backbone, args,
                                                             args.work_dir / "jobs" / "supervised")
    print(f"our loop (Trainer, FFCV) {ours:.1f} img/s vs plain PyTorch (ImageFolder + DataLoader) {plain:.1f} img/s: "
          f"{ours / plain:.2f}x")


if __name__ == "__main__":
    main()
