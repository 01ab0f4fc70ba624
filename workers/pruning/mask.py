"""Pruning masks: ``{parameter name: bool tensor}`` over a model's prunable weights.

Prunable by default: the ``.weight`` of every Conv/Linear module whose parameter name matches an
``include`` pattern (fnmatch) and no ``exclude`` pattern; biases and normalisation layers never.
Masks are enforced by multiplying the weights after every optimiser step *and* masking the gradients
(a tensor hook, so also before DDP's all-reduce and under AMP's scaling): pruned weights, their
gradients and the optimiser's momentum stay exactly zero.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from workers.checkpoint import save_torch_atomic
from workers.safe_load import load_torch

log = logging.getLogger(__name__)
Mask = dict[str, torch.Tensor]
PRUNABLE_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_names(model: nn.Module, include: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """Names of the Conv/Linear weights of ``model`` selected by the patterns, in module order."""
    names = []
    for mod_name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_MODULES) or getattr(module, "weight", None) is None:
            continue
        name = f"{mod_name}.weight" if mod_name else "weight"
        if any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
                fnmatch.fnmatchcase(name, p) for p in exclude):
            names.append(name)
    return names


def full_mask(model: nn.Module, names: Sequence[str]) -> Mask:
    """The dense mask (every weight kept) over ``names``."""
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}


def count(mask: Mask) -> tuple[int, int]:
    """``(kept, total)`` weights of the mask."""
    return sum(int(m.sum()) for m in mask.values()), sum(m.numel() for m in mask.values())


def density(mask: Mask) -> float:
    """Share of the prunable weights that are kept (1.0 for an empty mask)."""
    kept, total = count(mask)
    return kept / total if total else 1.0


def sparsity_report(mask: Mask) -> dict[str, Any]:
    """Per layer and in total: weights, unpruned weights, density (``sparsity.json``)."""
    layers = {n: {"total": m.numel(), "unpruned": int(m.sum()), "density": float(m.float().mean())}
              for n, m in mask.items()}
    kept, total = count(mask)
    return {"total": total, "unpruned": kept, "density": kept / total if total else 1.0, "layers": layers}


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights of ``model`` in place."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        params[name].mul_(m.to(device=params[name].device, dtype=params[name].dtype))


def mask_gradients(model: nn.Module, mask: Mask) -> list[Any]:
    """Hooks that zero the pruned entries of every gradient as it is computed; returns the handles."""
    params = dict(model.named_parameters())
    handles = []
    for name, m in mask.items():
        p = params[name]
        keep = m.to(device=p.device, dtype=p.dtype)
        handles.append(p.register_hook(lambda g, keep=keep: g * keep))
    return handles


def broadcast_mask(mask: Mask, names: Sequence[str], shapes: dict[str, torch.Size], device: torch.device) -> Mask:
    """Rank 0's mask on every rank (other ranks pass ``{}``); identity outside a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mask
    out = {}
    for name in names:  # the same order on every rank
        t = mask[name].to(device=device, dtype=torch.uint8) if name in mask else torch.zeros(
            shapes[name], dtype=torch.uint8, device=device)
        dist.broadcast(t, src=0)
        out[name] = t.bool().cpu()
    return out


def save_mask(mask: Mask, path: Path) -> None:
    save_torch_atomic({n: m.cpu() for n, m in mask.items()}, path)


def load_mask(path: Path) -> Mask:
    return {n: m.bool() for n, m in load_torch(path).items()}
