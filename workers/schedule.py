"""Optimizer, per-iteration learning-rate schedule and weight-decay schedule from a TrainConfig.

``sgd`` is PyTorch's over every parameter, all decayed (as MoCo's reference). ``adamw`` (PyTorch's) and
``lars`` / ``lamb`` (timm's factory, ``timm.optim.create_optimizer_v2``) get two parameter groups, as
MAE, DINO and timm (``param_groups_weight_decay`` semantics, :func:`decay_groups`): no weight decay for
1-D parameters (biases, norm weights) and for the names a module lists in ``no_weight_decay()`` (a timm
ViT: position embedding, class and register tokens), at any depth of the model; LARS also leaves the
undecayed group out of its trust-ratio adaptation. With ``lr_scaling = "linear"`` every learning rate is
``lr x global batch / 256``. ``adam_beta2`` is the second-moment decay of AdamW and LAMB (the first stays
0.9); ``grad_clip`` > 0 clips the global gradient norm before every step (:func:`optimizer_step`).

Weight-decay schedule (DINO's ``wd_schedule``, ``main_dino.py``): with a ``weight_decay_end`` (a method
hyperparameter, DINO's default 0.4), :func:`set_weight_decay` moves the decayed group's weight decay from
``weight_decay`` at step 0 to ``weight_decay_end`` by a half cosine over the run's optimiser steps
(:func:`weight_decay_at`, the reference's per-iteration formula); the undecayed group stays at 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from specs.job import TrainConfig

DECAYED = "decayed"  # param-group key: True for the group whose weight decay the schedule moves


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full parameter names that a submodule's ``no_weight_decay()`` (timm's convention) exempts from decay."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if not callable(listed):
            continue
        for name in listed():
            names.add(f"{prefix}.{name}" if prefix else name)
    return names


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups of ``model``'s trainable parameters: decayed (``weight_decay``) and not (0):
    1-D parameters, ``.bias`` and the ``no_weight_decay()`` names are not decayed."""
    exempt = no_weight_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or name in exempt else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0, DECAYED: False},
            {"params": decay, "weight_decay": weight_decay, DECAYED: True}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.optimizer`` over ``model``'s trainable parameters, at :func:`base_lr`."""
    lr = base_lr(cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD([{"params": list(model.parameters()), DECAYED: True}], lr=lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    betas = (0.9, cfg.adam_beta2)
    groups = decay_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay, betas=betas)
    from timm.optim import create_optimizer_v2

    kwargs: dict = {"momentum": cfg.momentum} if cfg.optimizer == "lars" else {"betas": betas}
    return create_optimizer_v2(groups, opt=cfg.optimizer, lr=lr, weight_decay=cfg.weight_decay, **kwargs)


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


def weight_decay_at(start: float, end: float, step: int, total_steps: int) -> float:
    """DINO's cosine weight-decay schedule: ``end + (start - end)(1 + cos(pi step / total)) / 2``
    (``start`` at step 0, approaching ``end`` at the last step, as ``utils.cosine_scheduler``)."""
    progress = min(max(step, 0), total_steps) / max(1, total_steps)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def set_weight_decay(opt: torch.optim.Optimizer, cfg: TrainConfig, end: float | None, step: int,
                     total_steps: int) -> None:
    """Set the decayed group's weight decay for optimiser ``step`` of ``total_steps`` (nothing without ``end``)."""
    if end is None:
        return
    wd = weight_decay_at(cfg.weight_decay, end, step, total_steps)
    for group in opt.param_groups:
        if group.get(DECAYED, True):
            group["weight_decay"] = wd
