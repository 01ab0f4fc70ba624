"""The linear-probe evaluation protocol (``[eval] protocols = [..., "linear"]``), run inside the job after
training: a linear classifier on the frozen backbone's features.

Protocol (moco ``main_lincls.py``, mae ``main_linprobe.py``): the backbone is frozen in eval mode (its
weights and BatchNorm statistics do not change); only a linear head is trained, preceded by
BatchNorm1d(affine=False) for Vision Transformers (as MAE's probe), on the subset's training split and
evaluated on its validation split; SGD (momentum 0.9) at ``linear_lr x batch / 256`` with a cosine
schedule over ``linear_epochs``, global batch ``linear_batch_size``. Metrics: ``linear_top1`` and
``linear_top5``.

Choices: the frozen backbone in eval mode is a fixed function, so the features of the training split
are extracted once (centre crops, the ``eval`` recipe) and the head trains on them for all epochs; this
costs one pass over the data instead of one per epoch (no random-crop augmentation of the probe; the
kNN protocol makes the same choice). Under DDP every rank extracts and trains on its own share, the
head's gradients are all-reduced (averaged) so every rank holds the same head, and every rank takes the
same number of steps. After every probe epoch rank 0 writes ``linear_probe.pt`` in the job directory; a
job stopped during the probe (it returns ``None``) resumes from it without training the backbone again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from specs.contract import JobPaths
from specs.job import JobSpec
from subsets import DatasetMeta, Manifest
from workers.checkpoint import read_or_set_aside, save_torch_atomic
from workers.data.loader import build_loader
from workers.distributed import DistContext, all_gather_rows, all_reduce_sum, any_rank, broadcast_buffers

log = logging.getLogger(__name__)


def probe_if_asked(spec: JobSpec, backbone: nn.Module, meta: DatasetMeta, manifest: Manifest, job_dir: Path,
                   ctx: DistContext, stop: threading.Event) -> dict[str, float] | None:
    """The linear-probe metrics when ``spec.eval.protocols`` lists ``linear`` (else ``{}``); ``None`` if stopped."""
    if "linear" not in spec.eval.protocols:
        return {}

    def loader(split: str) -> Any:
        return build_loader(meta, manifest, split, recipe="eval", batch_size=256, image_size=spec.train.image_size,
                            seed=spec.seed, train=False, distributed=ctx.distributed,
                            num_workers=spec.resources.loader_workers, device=ctx.device)

    return linear_probe(backbone, loader("train"), loader("val"), num_classes=manifest.num_classes, spec=spec,
                        job_dir=job_dir, ctx=ctx, stop=stop)


@torch.no_grad()
def frozen_features(backbone: nn.Module, batches: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (float32) and labels of every batch's first view, by ``backbone`` in eval mode."""
    backbone.eval()
    amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda"
           else contextlib.nullcontext())
    feats, labels = [], []
    with amp:
        for views, y in batches:
            feats.append(backbone(views[0]).float().clone())
            labels.append(y.to(torch.int64).clone())
    if not feats:
        width = int(getattr(backbone, "num_features", 0))
        return torch.zeros(0, width, device=device), torch.zeros(0, dtype=torch.int64, device=device)
    return torch.cat(feats), torch.cat(labels)


def build_head(feat_dim: int, num_classes: int, vit: bool) -> nn.Sequential:
    """Linear head (weights N(0, 0.01), bias 0); BatchNorm1d(affine=False) before it for ViTs."""
    fc = nn.Linear(feat_dim, num_classes)
    nn.init.normal_(fc.weight, std=0.01)
    nn.init.zeros_(fc.bias)
    return nn.Sequential(nn.BatchNorm1d(feat_dim, affine=False), fc) if vit else nn.Sequential(fc)


def _average_gradients(ctx: DistContext, module: nn.Module) -> None:
    if not ctx.distributed:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(ctx.world_size)


def linear_probe(backbone: nn.Module, train_batches: Any, val_batches: Any, *, num_classes: int, spec: JobSpec,
                 job_dir: Path, ctx: DistContext, stop: threading.Event) -> dict[str, float] | None:
    """Train and evaluate the linear probe (module docstring); ``None`` when ``stop`` was set (resumable)."""
    cfg, device = spec.eval, ctx.device
    feats, labels = frozen_features(backbone, train_batches, device)
    head = build_head(feats.shape[1], num_classes, vit=hasattr(backbone, "patch_embed")).to(device)
    lr = cfg.linear_lr * cfg.linear_batch_size / 256
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=cfg.linear_weight_decay)
    path = JobPaths.of(job_dir).probe_checkpoint
    start = 0
    state = read_or_set_aside(path, ("epoch", "head", "optimizer"), device)
    if state is not None and state.get("job_hash") == spec.job_hash:
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        log.info("linear probe: resuming after epoch %d", start)
    per_rank = max(1, cfg.linear_batch_size // ctx.world_size)
    counts = all_gather_rows(ctx, torch.tensor([len(labels)], device=device))
    steps = max(1, math.ceil(int(counts.min()) / per_rank))
    for epoch in range(start, cfg.linear_epochs):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.linear_epochs))
        gen = torch.Generator().manual_seed(spec.seed * 7919 + epoch * 31 + ctx.rank)
        order = torch.randperm(len(labels), generator=gen).to(device)
        head.train()
        for s in range(steps):
            idx = order[s * per_rank:(s + 1) * per_rank]
            if idx.numel() == 0:  # an empty share: still take part in the gradient all-reduce
                idx = order[:1]
            loss = F.cross_entropy(head(feats[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _average_gradients(ctx, head)
            opt.step()
        if ctx.is_main:
            save_torch_atomic({"job_hash": spec.job_hash, "epoch": epoch + 1, "head": head.state_dict(),
                               "optimizer": opt.state_dict()}, path)
        if any_rank(ctx, stop.is_set()):
            return None
    broadcast_buffers(ctx, head)
    head.eval()
    val_feats, val_labels = frozen_features(backbone, val_batches, device)
    with torch.no_grad():
        top = head(val_feats).topk(min(5, num_classes), dim=1).indices if len(val_labels) else None
    hit1 = float((top[:, 0] == val_labels).sum()) if top is not None else 0.0
    hit5 = float((top == val_labels[:, None]).any(dim=1).sum()) if top is not None else 0.0
    c1, c5, n = all_reduce_sum(ctx, [hit1, hit5, float(len(val_labels))])
    return {"linear_top1": c1 / max(1.0, n), "linear_top5": c5 / max(1.0, n)}
