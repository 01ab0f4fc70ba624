"""The cost of a masked training step (lottery tickets) against the same dense step.

    .venv/bin/python -m benchmarks.bench_prune [--backbone resnet18 --image-size 64 --batch 64 --steps 20
                                                --density 0.107 --device cpu|cuda]

Both sides run the same SGD step (momentum 0.9, weight decay 5e-4) on the same random batch through a
timm backbone + linear head. The masked side adds what a lottery job adds: the gradient hooks that zero
pruned gradients (``mask_gradients``) and the weight multiply after the step (``apply_mask``), with a
global magnitude mask at ``--density`` (0.107 = level 10 at 20% per level). Steps alternate between the
sides so that a shared machine's load hits both alike; the median of each side is reported, and the ratio
masked / dense (1.00 = free). One torch thread on CPU.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from specs.backbones import create_backbone
from workers.pruning.mask import apply_mask, full_mask, mask_gradients, prunable_names
from workers.pruning.registry import get_strategy


def build(backbone: str, image_size: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    body = create_backbone(backbone, image_size)
    model = nn.Sequential()
    model.add_module("backbone", body)
    model.add_module("head", nn.Linear(body.num_features, 10))
    return model.to(device)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--density", type=float, default=0.8 ** 10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    dense, masked = build(args.backbone, args.image_size, device), build(args.backbone, args.image_size, device)
    names = prunable_names(masked, ["backbone.*"])
    level = round(math.log(args.density) / math.log(0.8))
    mask = get_strategy("global").prune(dict(masked.named_parameters()), full_mask(masked, names), 0.2, level,
                                        torch.Generator())
    mask = {n: m.to(device) for n, m in mask.items()}
    apply_mask(masked, mask)
    mask_gradients(masked, mask)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
            for m in (dense, masked)}

    def step(model: nn.Module, enforce: bool) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt = opts[id(model)]
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if enforce:
            apply_mask(model, mask)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(3):  # warm-up
        step(dense, False)
        step(masked, True)
    times: dict[str, list[float]] = {"dense": [], "masked": []}
    for _ in range(args.steps):
        times["dense"].append(step(dense, False))
        times["masked"].append(step(masked, True))
    d, m = statistics.median(times["dense"]), statistics.median(times["masked"])
    kept = sum(int(v.sum()) for v in mask.values()) / sum(v.numel() for v in mask.values())
    print(f"{args.backbone} {args.image_size}px batch {args.batch} on {device}, density {kept:.3f} "
          f"({len(names)} prunable layers), median of {args.steps} steps")
    print(f"  dense step : {1000 * d:8.2f} ms  (baseline)")
    print(f"  masked step: {1000 * m:8.2f} ms  ratio {m / d:.3f}x")
    zero = all(bool((p[~mask[n]] == 0).all()) for n, p in masked.named_parameters() if n in mask)
    print(f"  pruned weights exactly zero after {args.steps + 3} masked steps: {zero}")


if __name__ == "__main__":
    main()
