"""A lottery job (``spec.lottery`` set): its weights and mask before training, the mask during training.

- Level 0 (dense) starts from scratch or from a pre-trained start, and saves the rewind point
  (``rewind.pt``) at the iteration ``rewind`` names ("0it", "500it", "3ep"; "start": the start itself).
- Level L >= 1 loads level L-1's trained weights (``final_weights.pt``) and mask, prunes
  ``prune_fraction`` of the remaining prunable weights, rewinds the survivors to level 0's rewind point.
- An evaluation job retrains a ticket on another task/subset: the rewind weights (whatever matches in
  name and shape: a new head where the class count differs) under the ticket's mask; ``random_reinit``
  keeps the mask with new random weights, ``random_prune`` keeps each layer's density with a random mask.

The mask is computed on rank 0 and broadcast; it is written to ``mask.pt`` with ``sparsity.json``, and
enforced after every optimiser step (weights) and in every backward pass (gradients). Parent jobs'
files are read through the job contract (:mod:`specs.contract`) from the same workspace.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from specs.atomic import write_text_atomic
from specs.backbones import backbone_of
from specs.contract import JobPaths, job_dir_for
from specs.job import JobSpec
from specs.lottery import (
    DEFAULT_PRUNABLE,
    REWIND_START,
    ROLE_EVAL,
    TICKET,
    Step,
)
from workers.checkpoint import save_torch_atomic
from workers.distributed import DistContext
from workers.pruning.mask import (
    Mask,
    apply_mask,
    broadcast_mask,
    density,
    full_mask,
    load_mask,
    mask_gradients,
    prunable_names,
    save_mask,
    sparsity_report,
)
from workers.pruning.registry import get_strategy
from workers.safe_load import load_torch

log = logging.getLogger(__name__)
REINIT_SEED_OFFSET = 1_000_003  # random_reinit draws its weights from another seed than the ticket's own init


def parent_paths(job_dir: Path, job_hash: str) -> JobPaths:
    """The job directory of ``job_hash`` in the workspace that holds ``job_dir``."""
    return JobPaths.of(job_dir_for(job_hash, job_dir.resolve().parents[2]))


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: a parent job's file is missing (did the parent complete?)")
    return load_torch(path)


def transfer(method: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load the entries of ``state`` whose name and shape match ``method``; return the names left out."""
    own = method.state_dict()
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    method.load_state_dict(take, strict=False)
    return sorted(set(own) - set(take))


def _start_state(start: dict[str, Any], job_dir: Path) -> dict[str, torch.Tensor]:
    """The pre-trained start as a method state dict (``backbone.*`` names for a bare backbone)."""
    if "job" in start:
        return _load(parent_paths(job_dir, start["job"]).final_weights)["model"]
    path = Path(start["file"])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if start.get("sha256") and digest != start["sha256"]:
        raise RuntimeError(f"{path}: sha256 {digest} differs from {start['sha256']} recorded at launch")
    raw = _load(path)
    if "model" in raw:
        return raw["model"]
    state = raw.get("backbone", raw.get("state_dict", raw))
    return {k if k.startswith("backbone.") else f"backbone.{k}": v for k, v in state.items()}


@dataclass
class LotteryTicket:
    """The lottery side of one running job on one rank."""

    spec: JobSpec
    paths: JobPaths
    method: nn.Module
    ctx: DistContext
    mask: Mask = field(default_factory=dict)
    rewind_at: Step | None = None  # level 0: when to save the rewind point
    hooks: list[Any] = field(default_factory=list)

    @property
    def level(self) -> int:
        return int(self.spec.lottery["level"])  # type: ignore[index]

    def before_step(self, step: int, steps_per_epoch: int) -> None:
        """Level 0: save the rewind point when training reaches it (before that step's update)."""
        if self.rewind_at is not None and step == self.rewind_at.iteration(steps_per_epoch):
            self.save_rewind()

    def after_step(self) -> None:
        """Zero the pruned weights again (weight decay, momentum and AMP can never revive them)."""
        if self.mask:
            apply_mask(self.method, self.mask)

    def save_rewind(self) -> None:
        if self.ctx.is_main and not self.paths.rewind.is_file():
            save_torch_atomic({"job_hash": self.spec.job_hash, "step": self.spec.lottery["rewind"],  # type: ignore[index]
                               "backbone": self.method.backbone.state_dict(),  # type: ignore[union-attr]
                               "model": self.method.state_dict()}, self.paths.rewind)
            log.info("rewind point %s saved", self.spec.lottery["rewind"])  # type: ignore[index]

    def finish(self) -> dict[str, float]:
        """After training (the trainer has written ``final_weights.pt``): check the mask held; the metrics the
        lottery report reads."""
        if self.rewind_at is not None and not self.paths.rewind.is_file():
            raise RuntimeError(f"rewind point {self.rewind_at} was never reached: training is shorter")
        params = dict(self.method.named_parameters())
        revived = [n for n, m in self.mask.items() if bool((params[n].detach()[~m.to(params[n].device)] != 0).any())]
        if revived:
            raise RuntimeError(f"pruned weights are non-zero after training: {revived[:3]}")
        return {"weights_remaining": density(self.mask) if self.mask else 1.0, "lottery_level": float(self.level)}


def setup_ticket(spec: JobSpec, job_dir: Path, method: nn.Module, ctx: DistContext) -> LotteryTicket | None:
    """Prepare ``method`` for a lottery job (weights, mask, hooks); None for any other job."""
    lot = spec.lottery
    if lot is None:
        return None
    ticket = LotteryTicket(spec, JobPaths.of(job_dir), method, ctx)
    if lot["role"] == ROLE_EVAL:
        mask = _setup_eval(ticket, lot)
    elif lot["level"] == 0:
        _setup_dense(ticket, lot)
        return ticket
    else:
        mask = _setup_level(ticket, lot)
    ticket.mask = mask
    apply_mask(method, mask)
    ticket.hooks = mask_gradients(method, mask)
    if ctx.is_main:
        save_mask(mask, ticket.paths.mask)
        write_text_atomic(ticket.paths.sparsity, json.dumps(sparsity_report(mask), indent=1))
    log.info("lottery %s level %d: %.4f of %d prunable weights remain", lot["role"], lot["level"], density(mask),
             sum(m.numel() for m in mask.values()))
    return ticket


def _setup_dense(ticket: LotteryTicket, lot: dict[str, Any]) -> None:
    if lot.get("start"):
        missing = transfer(ticket.method, _start_state(lot["start"], ticket.paths.root))
        log.info("level 0 starts from %s (%d entries not in it: new)", lot["start"], len(missing))
    if lot["rewind"] == REWIND_START:
        ticket.save_rewind()
    else:
        ticket.rewind_at = Step.parse(lot["rewind"])


def _names(ticket: LotteryTicket, lot: dict[str, Any]) -> list[str]:
    return prunable_names(ticket.method, lot.get("prunable", DEFAULT_PRUNABLE), lot.get("not_prunable", ()))


def _own_or(ticket: LotteryTicket, names: list[str], compute: Any) -> Mask:
    """This job's mask: reloaded when a previous attempt wrote it, else computed; rank 0's everywhere."""
    mask: Mask = {}
    if ticket.ctx.is_main:
        mask = load_mask(ticket.paths.mask) if ticket.paths.mask.is_file() else compute()
    shapes = {n: p.shape for n, p in ticket.method.named_parameters()}
    return broadcast_mask(mask, names, shapes, ticket.ctx.device)


def _parent_mask(ticket: LotteryTicket, parent: JobPaths, names: list[str]) -> Mask:
    """The parent's mask on ``names`` (dense where it has none: level 0, or a layer it does not know)."""
    mask = full_mask(ticket.method, names)
    if parent.mask.is_file():
        for n, m in load_mask(parent.mask).items():
            if n in mask and m.shape == mask[n].shape:
                mask[n] = m
    return mask


def _generator(spec: JobSpec) -> torch.Generator:
    return torch.Generator().manual_seed(spec.seed)


def _setup_level(ticket: LotteryTicket, lot: dict[str, Any]) -> Mask:
    spec, method = ticket.spec, ticket.method
    parent = parent_paths(ticket.paths.root, spec.depends_on[0])
    names = _names(ticket, lot)

    def compute() -> Mask:
        trained = _load(parent.final_weights)["model"]
        weights = {n: trained[n] for n in names}
        return get_strategy(lot["strategy"]).prune(weights, _parent_mask(ticket, parent, names),
                                                   float(lot["prune_fraction"]), int(lot["level"]),
                                                   _generator(spec))

    mask = _own_or(ticket, names, compute)
    rewind = _load(parent_paths(ticket.paths.root, lot["rewind_job"]).rewind)["model"]
    method.load_state_dict(rewind)  # the same method and classes as level 0: every entry
    return mask


def _setup_eval(ticket: LotteryTicket, lot: dict[str, Any]) -> Mask:
    spec, method = ticket.spec, ticket.method
    source = parent_paths(ticket.paths.root, spec.depends_on[0])
    names = _names(ticket, lot)
    kind = lot["ticket"]
    if kind == "random_reinit":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed + REINIT_SEED_OFFSET)
            fresh = backbone_of(spec.train)
        method.backbone.load_state_dict(fresh.state_dict())  # type: ignore[union-attr]
    else:
        rewind = _load(parent_paths(ticket.paths.root, lot["rewind_job"]).rewind)["model"]
        new = transfer(method, rewind)
        log.info("ticket weights from the rewind point; new (not in it or another shape): %s", new)

    def compute() -> Mask:
        mask = _parent_mask(ticket, source, names)
        if kind == TICKET or kind == "random_reinit":
            return mask
        return get_strategy("random").prune({}, mask, 0.0, int(lot["level"]), _generator(spec))

    return _own_or(ticket, names, compute)
