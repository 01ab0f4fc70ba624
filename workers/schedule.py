"""Optimizer and per-iteration learning-rate schedule from a TrainConfig.

``sgd`` and ``adamw`` are PyTorch's over every parameter (as before). ``lars`` and ``lamb`` come from
timm's optimiser factory (``timm.optim.create_optimizer_v2``) built on the model, which leaves biases and
normalisation parameters out of weight decay and, for LARS, out of the trust-ratio adaptation (as the
SSL references). With ``lr_scaling = "linear"`` every learning rate is ``lr x global batch / 256``.
``adam_beta2`` is the second-moment decay of AdamW and LAMB (the first stays 0.9); ``grad_clip`` > 0 clips
the global gradient norm before every step (:func:`optimizer_step`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from specs.job import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.optimizer`` over ``model``'s trainable parameters, at :func:`base_lr`."""
    lr = base_lr(cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    betas = (0.9, cfg.adam_beta2)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, betas=betas)
    from timm.optim import create_optimizer_v2

    kwargs: dict = {"momentum": cfg.momentum} if cfg.optimizer == "lars" else {"betas": betas}
    return create_optimizer_v2(model, opt=cfg.optimizer, lr=lr, weight_decay=cfg.weight_decay, **kwargs)


def optimizer_step(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor,
                   params: list[nn.Parameter], grad_clip: float) -> bool:
    """Backward, clip the global gradient norm of ``params`` to ``grad_clip`` (0: no clipping; on the
    unscaled gradients under fp16), step. Under DDP the gradients are already averaged over the ranks, so
    every rank clips alike. Returns False when the fp16 grad scaler skipped the step (inf/NaN gradients:
    the weights did not move, the scale was lowered), True otherwise."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scale = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    return scaler.get_scale() >= scale  # the scaler lowers its scale exactly when it skipped the step


def base_lr(cfg: TrainConfig) -> float:
    """``cfg.lr``, times global batch / 256 with ``lr_scaling = "linear"``."""
    return cfg.lr * cfg.batch_size / 256 if cfg.lr_scaling == "linear" else cfg.lr


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global ``step``: linear warm-up, then cosine / step (x0.1 at 1/2, 3/4) / constant."""
    lr = base_lr(cfg)
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if cfg.schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return lr * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
    return lr


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
