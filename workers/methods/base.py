"""The base of every training method: a backbone, a training loss, and the mechanics methods share.

Shared here, not per method:

- momentum (EMA) targets: :meth:`Method.momentum_copy` makes a frozen copy of a module; the Trainer calls
  :meth:`Method.after_step` after every optimiser step, which moves every copy towards its online module
  with ``tau = final - (final - base) * (cos(pi * step / max_steps) + 1) / 2`` (:func:`cosine_momentum`),
  ``step`` counting optimiser steps from 0 over the whole run (``max_steps = epochs x steps per epoch``,
  so tau reaches ``final`` exactly at the end, not early: solo-learn #286); the Trainer skips it (and the
  step counter) when the fp16 grad scaler skipped the optimiser step;
- every target starts as a copy of its *loaded* online module: whoever loads weights into the online network
  (an init file, a parent's weights, a rewind point, a lottery ticket) calls :meth:`Method.sync_targets`
  afterwards (moco-v3 ``moco/builder.py``; CV_LTH_Pre-training loads into both encoders); a resume from
  the job's own checkpoint restores both instead. :meth:`Method.target_twins` names each online
  parameter's target twin, so a lottery mask covers the targets too;
- the optimiser-step counter ``global_step`` (a buffer: it is checkpointed and resumes with the model),
  from which methods derive the current epoch (DINO's warm-ups);
- a multi-crop forward (:func:`multi_crop_forward`: one backbone pass per crop resolution);
- an optional online linear probe on detached features (``online_probe = true``): a linear classifier
  trained alongside the method on the features the method computes anyway (no extra pass); its loss
  sends no gradient to the backbone; its per-epoch training accuracy is reported as
  ``online_probe_top1``.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F


def cosine_momentum(step: int, max_steps: int, base: float, final: float = 1.0) -> float:
    """EMA momentum after ``step`` of ``max_steps`` optimiser steps: ``base`` at 0, ``final`` at ``max_steps``."""
    if max_steps <= 0:
        return final
    step = min(max(step, 0), max_steps)
    return final - (final - base) * (math.cos(math.pi * step / max_steps) + 1) / 2


@torch.no_grad()
def copy_module_(target: nn.Module, online: nn.Module) -> None:
    """Make ``target`` an exact copy of ``online`` in place: parameters and buffers (BN running statistics)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.copy_(o.detach())
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        t.copy_(o)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target = tau * target + (1 - tau) * online`` for the parameters. Buffers (BN running statistics)
    are the target's own, from its forward passes (as moco, BYOL and solo-learn)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(tau).add_(o.detach(), alpha=1 - tau)


def enable_any_input_size(backbone: nn.Module) -> None:
    """Let a timm ViT built for one image size take crops of any size (multi-crop's local crops):
    position embeddings are resampled to the crop's patch grid, crops padded to whole patches."""
    patch = getattr(backbone, "patch_embed", None)
    if patch is None or not hasattr(backbone, "dynamic_img_size"):
        return
    from timm.layers import Format

    if not backbone.dynamic_img_size:
        backbone.dynamic_img_size = True
        patch.flatten, patch.output_fmt = False, Format.NHWC
    patch.strict_img_size, patch.dynamic_img_pad = False, True


def multi_crop_forward(module: nn.Module, crops: Sequence[torch.Tensor]) -> torch.Tensor:
    """``module`` applied to every crop, one pass per run of same-sized crops; outputs concatenated in crop order."""
    outs, start = [], 0
    while start < len(crops):
        end = start
        while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
            end += 1
        outs.append(module(torch.cat(list(crops[start:end]), dim=0)))
        start = end
    return torch.cat(outs, dim=0)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2, *, last_bn: bool = False,
        bn: bool = True) -> nn.Sequential:
    """``layers`` Linear layers with (BN +) ReLU between them; optionally BN(affine=False) at the end."""
    mods: list[nn.Module] = []
    dim = in_dim
    for i in range(layers):
        last = i == layers - 1
        out = out_dim if last else hidden
        mods.append(nn.Linear(dim, out, bias=not (bn and (not last or last_bn))))
        if not last:
            mods += [nn.BatchNorm1d(out), nn.ReLU(inplace=True)] if bn else [nn.ReLU(inplace=True)]
        elif last_bn:
            mods.append(nn.BatchNorm1d(out, affine=False))
        dim = out
    return nn.Sequential(*mods)


class Method(nn.Module, ABC):
    """A training method around a feature backbone (``backbone(x) -> N x feat_dim``).

    Subclasses live one per file in ``workers/methods/`` and are listed in ``registry.py``.
    ``recipe`` names the augmentation recipe of the training loader (``workers.data.recipes``); a
    method may set it per instance (e.g. DINO's number of local crops).
    """

    name: ClassVar[str]
    recipe: str

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__()
        self.backbone, self.feat_dim, self.num_classes, self.hparams = backbone, feat_dim, num_classes, hparams
        self.register_buffer("global_step", torch.zeros((), dtype=torch.int64))
        self.steps_per_epoch = 1
        self.loader: Any = None
        self._momentum: list[tuple[nn.Module, nn.Module, float, float]] = []
        self.online_probe = nn.Linear(feat_dim, num_classes) if getattr(hparams, "online_probe", False) else None
        self._probe_counts = [0, 0]

    # --- the loss ------------------------------------------------------------------------------
    @abstractmethod
    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The loss of one batch (``views``: the recipe's augmented views of the same images)."""

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return self.training_loss(views, labels)

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[list[torch.Tensor], torch.Tensor]]) -> dict[str, float]:
        """Method-specific metrics on the validation batches (e.g. top-1 of a classifier head)."""
        return {}

    # --- hooks the Trainer calls ---------------------------------------------------------------
    def attach(self, loader: Any) -> None:
        """Called once with the training loader before training (its length, sample indices...)."""
        self.loader = loader
        self.steps_per_epoch = max(1, len(loader))

    def after_step(self, step: int, total_steps: int) -> None:
        """After optimiser step ``step`` (0-based) of ``total_steps``: move the momentum targets."""
        self.global_step.fill_(step + 1)
        for online, target, base, final in self._momentum:
            ema_update(target, online, cosine_momentum(step, total_steps, base, final))

    def eval_backbone(self) -> nn.Module:
        """The network the evaluation protocols (kNN, linear probe) extract features with and whose weights
        ``final_weights.pt`` hands to child jobs: the online backbone, unless a method's reference evaluates
        another one (DINO: the teacher). ``specs.methods.eval_network`` names it for the report."""
        return self.backbone

    @property
    def epoch(self) -> int:
        """The epoch the current optimiser step belongs to (from the checkpointed step counter)."""
        return int(self.global_step) // self.steps_per_epoch

    # --- shared mechanics -----------------------------------------------------------------------
    def momentum_copy(self, online: nn.Module, base: float, final: float = 1.0) -> nn.Module:
        """A frozen copy of ``online`` that :meth:`after_step` moves towards it by the cosine schedule."""
        target = copy.deepcopy(online)
        for p in target.parameters():
            p.requires_grad_(False)
        self._momentum.append((online, target, base, final))
        return target

    def sync_targets(self) -> None:
        """Make every momentum target an exact copy of its online module (after weights were loaded into it)."""
        for online, target, _, _ in self._momentum:
            copy_module_(target, online)

    def target_twins(self) -> dict[str, str]:
        """``{online parameter name: its momentum target's parameter name}`` (names in this method)."""
        names = {id(module): name for name, module in self.named_modules()}
        twins = {}
        for online, target, _, _ in self._momentum:
            src, dst = names[id(online)], names[id(target)]
            for (n, _), (m, _) in zip(online.named_parameters(), target.named_parameters(), strict=True):
                twins[f"{src}.{n}"] = f"{dst}.{m}"
        return twins

    def probe_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the online linear probe on detached ``features`` (0 when there is no probe)."""
        if self.online_probe is None:
            return features.new_zeros(())
        logits = self.online_probe(features.detach().float())
        self._probe_counts[0] += int((logits.argmax(dim=1) == labels).sum())
        self._probe_counts[1] += int(labels.numel())
        return F.cross_entropy(logits, labels)

    def epoch_metrics(self) -> dict[str, float]:
        """This rank's per-epoch counters (online probe: correct, total), reset; the Trainer sums ranks."""
        if self.online_probe is None:
            return {}
        correct, total = self._probe_counts
        self._probe_counts = [0, 0]
        return {"online_probe_top1": correct / max(1, total)}
