"""Optimizer and per-iteration learning-rate schedule from a TrainConfig."""

from __future__ import annotations

import math

import torch

from specs.job import TrainConfig


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:  # type: ignore[no-untyped-def]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global ``step``: linear warm-up, then cosine / step (x0.1 at 1/2, 3/4) / constant."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.lr * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
    return cfg.lr


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
