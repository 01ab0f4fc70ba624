"""The training loop of one job: data, model, optimisation, epoch checkpoints, evaluation.

A job trains its schedule's steps ``[start, epochs x steps per epoch)``: ``start`` is 0, or a lottery job's
rewind point (:meth:`LotteryTicket.start_step`), or the epoch its own checkpoint ends on; every schedule
(learning rate, warm-up, EMA momentum, the method's step counter) is read at the global step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from specs.backbones import backbone_of
from specs.contract import FINAL_METRICS_FILE
from specs.job import JobSpec
from specs.protocol import PROTOCOL_METRIC, TRAINING_PROTOCOL
from subsets import DatasetMeta, Manifest
from workers.checkpoint import load_checkpoint, save_checkpoint, save_rank_rng
from workers.data.jit import configure_jit
from workers.data.loader import build_loader
from workers.distributed import (
    DistContext,
    all_reduce_mean,
    all_reduce_sum,
    any_rank,
    barrier,
    broadcast_buffers,
)
from workers.errors import check_loss
from workers.init_weights import load_init, save_final_weights
from workers.knn import extract_features, knn_accuracy
from workers.linear_probe import probe_if_asked
from workers.lottery_job import LotteryTicket, setup_ticket
from workers.manifest import SubsetChanged, load_manifest
from workers.methods.base import Method
from workers.methods.registry import method_class
from workers.reporting import JobReporter
from workers.schedule import build_optimizer, lr_at, optimizer_step, set_lr, set_weight_decay
from workers.test_hooks import EPOCH_SAVED, maybe_fail_once, maybe_fail_unless_excluded, maybe_freeze_once, reached

log = logging.getLogger(__name__)
__all__ = ["SubsetChanged", "Trainer", "build_method", "load_manifest", "seed_everything"]


def seed_everything(seed: int, rank: int, *, deterministic: bool = False) -> None:
    """Seed torch (same model init on every rank) and the Python/NumPy RNGs (per rank).

    What repeats: augmentations draw from keys of (seed, epoch, view, sample index), not from these
    generators (``workers.data.draws``); everything else random in training (model init, dropout and
    DropPath, MAE masks, MoCo's shuffle, queue init) draws from torch's generator in this process, seeded
    here and saved/restored with every checkpoint. On the CPU a job therefore gives bit-identical results
    whatever its loader thread count. ``deterministic`` (``[train] deterministic``) also makes GPU
    kernels deterministic (see :func:`use_deterministic_kernels`).
    """
    torch.manual_seed(seed)
    random.seed(seed * 1000 + rank)
    np.random.seed((seed * 1000 + rank) % 2**32)
    if deterministic:
        use_deterministic_kernels()


def use_deterministic_kernels() -> None:
    """PyTorch's deterministic algorithms: cuBLAS with a fixed workspace, cuDNN without autotuning.

    Costs speed on GPUs (cuDNN's fastest kernels are often the non-deterministic ones). An op with no
    deterministic CUDA kernel warns (naming the op) instead of failing the job."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any matmul
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def build_method(spec: JobSpec, num_classes: int) -> Method:
    """The job's method around a timm backbone built from scratch (no pretrained download)."""
    backbone = backbone_of(spec.train)
    return method_class(spec.method)(backbone, backbone.num_features, num_classes, spec.typed_hparams())


def load_fresh_start(spec: JobSpec, job_dir: Path, method: Method) -> None:
    """A fresh start's weights (never a resume): ``spec.init`` (a file or a parent's final weights) into the
    backbone, then every EMA target made a copy of its loaded online module (a resume restores both)."""
    load_init(spec, job_dir, method.backbone)
    method.sync_targets()


def after_optimizer_step(method: Method, ticket: LotteryTicket | None, applied: bool, step: int,
                         total_steps: int) -> None:
    """After the optimiser step ``step``: the mask again; the EMA targets and the step counter only if the
    step was applied (a step the fp16 grad scaler skipped left the online weights, so the targets stay)."""
    if ticket is not None:
        ticket.after_step()
    if applied:
        method.after_step(step, total_steps)


def autocast_for(spec: JobSpec, device: torch.device) -> contextlib.AbstractContextManager:
    precision = spec.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    """Runs (or resumes) one job on this rank. :meth:`run` returns the final metrics, or ``None`` if stopped."""

    def __init__(self, spec: JobSpec, job_dir: Path, ctx: DistContext, reporter: JobReporter | None,
                 stop: threading.Event) -> None:
        self.spec, self.job_dir, self.ctx, self.reporter, self.stop = spec, job_dir, ctx, reporter, stop

    def run(self) -> dict[str, float] | None:
        done = self.job_dir / FINAL_METRICS_FILE
        if done.is_file():  # finished before, but the DB may not know: report again, train nothing
            return dict(json.loads(done.read_text())["metrics"])
        spec, ctx, cfg = self.spec, self.ctx, self.spec.train
        maybe_fail_once(spec.job_hash)  # test-only (off unless DLTH_TEST_FAIL_ONCE is set)
        maybe_fail_unless_excluded(spec.job_hash)  # test-only (off unless DLTH_TEST_FAIL_UNLESS_EXCLUDED is set)
        meta, manifest = load_manifest(spec, self.job_dir)
        configure_jit(spec.resources.ffcv_jit, len(manifest.indices["train"]))
        seed_everything(spec.seed, ctx.rank, deterministic=cfg.deterministic)
        method = build_method(spec, manifest.num_classes).to(ctx.device)
        if ctx.device.type == "cuda":
            method = method.to(memory_format=torch.channels_last)
        ticket = setup_ticket(spec, self.job_dir, method, ctx)  # lottery jobs: weights + mask; else None
        model = DistributedDataParallel(method) if ctx.distributed else method
        opt = build_optimizer(method, cfg)
        trainable = [p for p in method.parameters() if p.requires_grad]
        scaler = torch.amp.GradScaler(enabled=cfg.precision == "fp16" and ctx.device.type == "cuda")
        start_epoch, train_time = 0, 0.0
        ckpt = load_checkpoint(self.job_dir, ctx.rank)
        if ckpt is not None:
            method.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            start_epoch, train_time = int(ckpt["epoch"]), float(ckpt.get("train_time_s", 0.0))
        else:  # a fresh start: the initial weights the spec names (a parent's or a file's), if any
            load_fresh_start(spec, self.job_dir, method)
        per_rank = max(1, cfg.batch_size // ctx.world_size)
        available = len(manifest.indices["train"]) // ctx.world_size
        if per_rank > available:
            log.warning("batch %d per rank > %d samples per rank: using %d", per_rank, available, available)
            per_rank = max(1, available)
        loader = build_loader(
            meta, manifest, "train", recipe=method.recipe, batch_size=per_rank, image_size=cfg.image_size,
            seed=spec.seed, train=True, distributed=ctx.distributed,
            num_workers=spec.resources.loader_workers, device=ctx.device,
        )
        steps = len(loader)
        method.attach(loader)
        start = ticket.start_step(steps) if ticket is not None else 0  # a rewound level: the rewind step
        begin = start_epoch * steps if ckpt is not None else start
        if ckpt is None:
            method.global_step.fill_(start)
        wd_end = getattr(method.hparams, "weight_decay_end", None)  # DINO's weight-decay schedule
        for epoch in range(begin // steps, cfg.epochs):
            loader.set_epoch(epoch)
            model.train()
            t0, total, n_batches, n_images = time.time(), 0.0, 0, 0
            for i, (views, labels) in enumerate(loader):
                if epoch * steps + i < begin:  # the same batches as the dense run from step `begin` on
                    continue
                if any_rank(ctx, self.stop.is_set()):
                    return None
                lr = lr_at(cfg, epoch * steps + i, steps)
                set_lr(opt, lr)
                set_weight_decay(opt, cfg, wd_end, epoch * steps + i, cfg.epochs * steps)
                if ticket is not None:
                    ticket.before_step(epoch * steps + i, steps)
                with autocast_for(spec, ctx.device):
                    loss = model(views, labels)
                applied = optimizer_step(opt, scaler, loss, trainable, cfg.grad_clip)
                after_optimizer_step(method, ticket, applied, epoch * steps + i, cfg.epochs * steps)
                if self.reporter is not None:
                    self.reporter.step(epoch * steps + i + 1)
                    maybe_freeze_once(spec.job_hash)  # test-only (off unless DLTH_TEST_FREEZE_ONCE is set)
                step_loss = float(loss.detach())
                check_loss(step_loss, epoch, i, ctx)
                total += step_loss
                n_batches += 1
                n_images += int(labels.shape[0])
            if any_rank(ctx, self.stop.is_set()):
                return None
            elapsed = time.time() - t0
            train_time += elapsed
            values = {
                "train_loss": all_reduce_mean(ctx, total / max(1, n_batches)),
                "lr": lr_at(cfg, (epoch + 1) * steps - 1, steps),
                "epoch_time_s": elapsed,
                "images_per_s": n_images * ctx.world_size / max(elapsed, 1e-9),
            }
            values.update({k: all_reduce_mean(ctx, v) for k, v in method.epoch_metrics().items()})
            if spec.eval.every_epochs and (epoch + 1) % spec.eval.every_epochs == 0 and epoch + 1 < cfg.epochs:
                values.update(self.evaluate(method, meta, manifest))
            save_rank_rng(self.job_dir, ctx.rank, epoch + 1)  # every rank > 0 saves its own RNG states
            barrier(ctx)  # ... before rank 0's checkpoint names the epoch
            if ctx.is_main:
                save_checkpoint(self.job_dir, {"epoch": epoch + 1, "model": method.state_dict(),
                                               "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                                               "train_time_s": train_time, "job_hash": spec.job_hash})
                if self.reporter is not None:
                    self.reporter.epoch(epoch, values)
                reached(EPOCH_SAVED, spec.job_hash)  # test-only (off unless a test asks)
            log.info("epoch %d/%d loss %.4f (%.1fs)", epoch + 1, cfg.epochs, values["train_loss"], elapsed)
            barrier(ctx)
        if ctx.is_main:  # before the final metrics: a child may start as soon as this job is COMPLETED
            save_final_weights(self.job_dir, spec.job_hash, method.eval_backbone(), method)
        final = self.evaluate(method, meta, manifest)
        if ticket is not None:  # "epochs" stays the schedule's length; a rewound job trained from `start`
            final.update({**ticket.finish(), "start_step": float(start),
                          "train_steps": float(cfg.epochs * steps - start)})
        probe = probe_if_asked(spec, method.eval_backbone(), meta, manifest, self.job_dir, ctx, self.stop)
        if probe is None:
            return None
        final.update(probe)
        final.update({"train_time_s": train_time, "epochs": float(cfg.epochs),
                      PROTOCOL_METRIC: float(TRAINING_PROTOCOL), "num_classes": float(manifest.num_classes),
                      "num_train_samples": float(len(manifest.indices["train"]))})
        return final

    def evaluate(self, method: Method, meta: DatasetMeta, manifest: Manifest) -> dict[str, float]:
        """kNN (every method) and method-specific metrics on the subset's validation classes.

        The kNN runs on the method's evaluation network (:meth:`Method.eval_backbone`: DINO's teacher) with
        float32 features whatever the training precision; method metrics run under the training precision.
        Every rank evaluates its own share of both splits with rank 0's weights and buffers; the kNN
        merges neighbours across ranks and method metrics (per-sample means) are weighted by share size."""
        spec, ctx = self.spec, self.ctx
        if self.reporter is not None:
            self.reporter.phase("eval")  # no training steps: not a stall
        broadcast_buffers(ctx, method)
        method.eval()

        def eval_loader(split: str):  # type: ignore[no-untyped-def]
            return build_loader(meta, manifest, split, recipe="eval", batch_size=256,
                                image_size=spec.train.image_size, seed=spec.seed, train=False,
                                distributed=ctx.distributed, num_workers=spec.resources.loader_workers,
                                device=ctx.device)

        network = method.eval_backbone()
        bank, bank_y = extract_features(network, eval_loader("train"), ctx.device)
        val_loader = eval_loader("val")
        feats, ys = extract_features(network, val_loader, ctx.device)
        with autocast_for(spec, ctx.device):
            own = method.evaluate(val_loader)
        names = sorted(own)
        sums = all_reduce_sum(ctx, [own[name] * len(ys) for name in names] + [float(len(ys))])
        out = {name: total / max(1.0, sums[-1]) for name, total in zip(names, sums, strict=False)}
        out.update(knn_accuracy(bank, bank_y, feats, ys, k=spec.eval.knn_k, temperature=spec.eval.knn_temperature,
                                num_classes=manifest.num_classes, ctx=ctx))
        method.train()
        return out
