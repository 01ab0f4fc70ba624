"""The linear-probe evaluation protocol (``[eval] protocols = [..., "linear"]``), run inside the job after
training: a linear classifier on the frozen features of the method's evaluation network.

Protocol (moco ``main_lincls.py``, mae ``main_linprobe.py``): the backbone is frozen in eval mode (its
weights and BatchNorm statistics do not change); only a head is trained, on the subset's training split,
and evaluated on its validation split. The head is ``BatchNorm1d(affine=False, eps=1e-6)`` + ``Linear``
for EVERY backbone (MAE's probe): the batch norm standardises each feature, so the probe does not rank
methods by the scale of their features (MoCo's lincls needs lr 30 on its ResNet features for the same
reason). SGD (momentum 0.9, ``linear_weight_decay``) at ``lr x linear_batch_size / 256`` with a cosine
schedule over ``linear_epochs``, global batch ``linear_batch_size``.

The learning rate is chosen by a small sweep, never on the validation split: ``linear_lr`` x
:data:`LR_FACTORS`, each candidate trained on the training split minus a held-out part and scored on that
part (top-1, then cross-entropy to break ties). The held-out part is a fixed function of the dataset
sample index (:func:`held_out`, about :data:`HOLDOUT_FRACTION` of the training samples), the same on
every rank and for every job of a subset. The head with the chosen rate is then trained on the whole
training split. Metrics: ``linear_top1``, ``linear_top5`` (validation) and ``linear_lr`` (the chosen
rate, before the batch scaling). A training split too small to hold anything out skips the sweep
(``linear_lr`` as given).

Choices: the frozen backbone in eval mode is a fixed function, so the features of the training split are
extracted once (centre crops, the ``eval`` recipe, float32) and every head trains on them; this costs one
pass over the data instead of one per epoch and candidate (no random-crop augmentation of the probe; the
kNN protocol makes the same choice). Under DDP every rank extracts and trains on its own share, the
head's gradients are all-reduced (averaged) so every rank holds the same head, every rank takes the same
number of steps, and rank 0's BatchNorm statistics are used for scoring. After every probe epoch rank 0
writes ``linear_probe.pt`` (which head of the sweep, its epoch, the scores so far); a job stopped during
the probe (it returns ``None``) resumes from it without training the backbone again. Heads are
initialised and batches shuffled from generators seeded by (job seed, candidate, epoch), so a resumed
probe gives the uninterrupted one's result.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
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
from workers.knn import fp32_forward

log = logging.getLogger(__name__)

LR_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)  # the sweep: linear_lr times these
HOLDOUT_FRACTION = 0.1  # of the training split, scores the sweep
BN_EPS = 1e-6  # MAE's probe


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
def frozen_features(backbone: nn.Module, batches: Any, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 features, labels and dataset sample indices of every batch's first view, by ``backbone`` in
    eval mode. Sample indices come from the loader (``batch_indices``); batches without them are numbered
    by position."""
    backbone.eval()
    feats, labels, ids = [], [], []
    seen = 0
    for views, y in batches:
        feats.append(fp32_forward(backbone, views[0]).clone())
        labels.append(y.to(torch.int64).clone())
        batch_ids = getattr(batches, "batch_indices", None)
        ids.append(torch.as_tensor(batch_ids, dtype=torch.int64) if batch_ids is not None
                   else torch.arange(seen, seen + len(y)))
        seen += len(y)
    if not feats:
        width = int(getattr(backbone, "num_features", 0))
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return torch.zeros(0, width, device=device), empty, empty
    return torch.cat(feats), torch.cat(labels), torch.cat(ids).to(device)


def held_out(sample_ids: torch.Tensor, fraction: float = HOLDOUT_FRACTION) -> torch.Tensor:
    """Which samples score the sweep: about ``fraction`` of them, by a multiplicative (Fibonacci) hash of the
    dataset index, so the choice depends on the sample alone (not on the rank, order or job)."""
    h = (sample_ids.cpu().numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    return torch.from_numpy(h < np.uint64(int(fraction * 2**24))).to(sample_ids.device)


def build_head(feat_dim: int, num_classes: int, generator: torch.Generator | None = None) -> nn.Sequential:
    """BatchNorm1d(affine=False) + Linear (weights N(0, 0.01) drawn from ``generator``, bias 0)."""
    fc = nn.Linear(feat_dim, num_classes)
    with torch.no_grad():
        fc.weight.normal_(0.0, 0.01, generator=generator)
    nn.init.zeros_(fc.bias)
    return nn.Sequential(nn.BatchNorm1d(feat_dim, affine=False, eps=BN_EPS), fc)


def _average_gradients(ctx: DistContext, module: nn.Module) -> None:
    if not ctx.distributed:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(ctx.world_size)


class _Probe:
    """Trains and scores heads on one rank's features; checkpoints to ``linear_probe.pt``."""

    def __init__(self, spec: JobSpec, num_classes: int, job_dir: Path, ctx: DistContext,
                 stop: threading.Event) -> None:
        self.spec, self.num_classes, self.ctx, self.stop = spec, num_classes, ctx, stop
        self.path = JobPaths.of(job_dir).probe_checkpoint

    def load(self) -> dict[str, Any]:
        """The saved progress of this job's probe, or a fresh start."""
        fresh: dict[str, Any] = {"stage": 0, "epoch": 0, "scores": []}
        state = read_or_set_aside(self.path, ("stage", "epoch", "scores"), self.ctx.device)  # torn: set aside
        if state is None or state.get("job_hash") != self.spec.job_hash:
            return fresh
        log.info("linear probe: resuming at head %d, after epoch %d", state["stage"], state["epoch"])
        return state

    def save(self, state: dict[str, Any]) -> None:
        if self.ctx.is_main:
            save_torch_atomic({"job_hash": self.spec.job_hash, **state}, self.path)

    def train(self, stage: int, lr: float, feats: torch.Tensor, labels: torch.Tensor, resume: dict[str, Any] | None,
              scores: list[list[float]]) -> nn.Module | None:
        """Head ``stage`` trained at base rate ``lr`` (resumed from ``resume``); ``None`` when stopped."""
        cfg, ctx = self.spec.eval, self.ctx
        gen = torch.Generator().manual_seed(self.spec.seed * 1009 + stage)
        head = build_head(feats.shape[1], self.num_classes, gen).to(ctx.device)
        scaled = lr * cfg.linear_batch_size / 256
        opt = torch.optim.SGD(head.parameters(), lr=scaled, momentum=0.9, weight_decay=cfg.linear_weight_decay)
        start = 0
        if resume is not None:
            head.load_state_dict(resume["head"])
            opt.load_state_dict(resume["optimizer"])
            start = int(resume["epoch"])
        per_rank = max(1, cfg.linear_batch_size // ctx.world_size)
        fewest = int(all_gather_rows(ctx, torch.tensor([len(labels)], device=ctx.device)).min())
        steps = max(1, fewest // per_rank)  # every rank the same number of steps; the tail differs per epoch
        for epoch in range(start, cfg.linear_epochs):
            for group in opt.param_groups:
                group["lr"] = scaled * 0.5 * (1 + math.cos(math.pi * epoch / cfg.linear_epochs))
            order_gen = torch.Generator().manual_seed(self.spec.seed * 7919 + stage * 104729 + epoch * 31 + ctx.rank)
            order = torch.randperm(len(labels), generator=order_gen).to(ctx.device)
            head.train()
            for s in range(steps):
                idx = order[s * per_rank:(s + 1) * per_rank]
                if idx.numel() < 2:  # batch norm needs two samples; an empty share still joins the all-reduce
                    idx = order[:1].repeat(2)
                loss = F.cross_entropy(head(feats[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                _average_gradients(ctx, head)
                opt.step()
            self.save({"stage": stage, "epoch": epoch + 1, "head": head.state_dict(), "optimizer": opt.state_dict(),
                       "scores": scores})
            if any_rank(ctx, self.stop.is_set()):
                return None
        broadcast_buffers(ctx, head)
        head.eval()
        return head

    @torch.no_grad()
    def score(self, head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> list[float]:
        """[top-1, mean cross-entropy] of ``head`` on these features, over every rank's share."""
        logits = head(feats) if len(labels) else None
        correct = float((logits.argmax(dim=1) == labels).sum()) if logits is not None else 0.0
        loss = float(F.cross_entropy(logits, labels, reduction="sum")) if logits is not None else 0.0
        c, total_loss, n = all_reduce_sum(self.ctx, [correct, loss, float(len(labels))])
        return [c / max(1.0, n), total_loss / max(1.0, n)]


def choose_lr(candidates: list[float], scores: list[list[float]]) -> float:
    """The candidate with the best held-out top-1, ties broken by the lower held-out cross-entropy."""
    best = max(range(len(candidates)), key=lambda i: (scores[i][0], -scores[i][1], -i))
    return candidates[best]


def linear_probe(backbone: nn.Module, train_batches: Any, val_batches: Any, *, num_classes: int, spec: JobSpec,
                 job_dir: Path, ctx: DistContext, stop: threading.Event) -> dict[str, float] | None:
    """Sweep, train and evaluate the linear probe (module docstring); ``None`` when ``stop`` was set (resumable)."""
    cfg = spec.eval
    feats, labels, ids = frozen_features(backbone, train_batches, ctx.device)
    hold = held_out(ids)
    candidates = [cfg.linear_lr * f for f in LR_FACTORS]
    n_held = all_reduce_sum(ctx, [float(hold.sum()), float((~hold).sum())])
    sweep = min(n_held) > 0
    if not sweep:
        log.warning("linear probe: too few training samples to hold any out; no lr sweep, linear_lr %g", cfg.linear_lr)
    probe = _Probe(spec, num_classes, job_dir, ctx, stop)
    state = probe.load()
    scores: list[list[float]] = [list(s) for s in state["scores"]]
    final_stage = len(candidates)
    head: nn.Module | None = None
    chosen = cfg.linear_lr
    for stage in range(state["stage"] if sweep else final_stage, final_stage + 1):
        final = stage == final_stage
        if final and sweep:
            chosen = choose_lr(candidates, scores)
            log.info("linear probe: lr %g chosen on the held-out training samples (top-1, loss: %s)", chosen,
                     ", ".join(f"{lr:g}: {a:.3f}, {b:.3f}" for lr, (a, b) in zip(candidates, scores, strict=True)))
        rows = slice(None) if final else ~hold
        resume = state if state["stage"] == stage and "head" in state else None
        head = probe.train(stage, chosen if final else candidates[stage], feats[rows], labels[rows], resume, scores)
        if head is None:
            return None
        if not final:
            scores.append(probe.score(head, feats[hold], labels[hold]))
            probe.save({"stage": stage + 1, "epoch": 0, "scores": scores})
    assert head is not None
    val_feats, val_labels = frozen_features(backbone, val_batches, ctx.device)[:2]
    with torch.no_grad():
        top = head(val_feats).topk(min(5, num_classes), dim=1).indices if len(val_labels) else None
    hit1 = float((top[:, 0] == val_labels).sum()) if top is not None else 0.0
    hit5 = float((top == val_labels[:, None]).any(dim=1).sum()) if top is not None else 0.0
    c1, c5, n = all_reduce_sum(ctx, [hit1, hit5, float(len(val_labels))])
    return {"linear_top1": c1 / max(1.0, n), "linear_top5": c5 / max(1.0, n), "linear_lr": chosen}
