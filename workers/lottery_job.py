"""A lottery job (``spec.lottery`` set): its weights and mask before training, the mask during training.

- Level 0 (dense) starts from scratch or from a pre-trained start, and saves the rewind point
  (``rewind.pt``) at the iteration ``rewind`` names ("0it", "500it", "3ep"; "start": the start itself).
- Level L >= 1 loads level L-1's trained weights (``final_weights.pt``) and mask, prunes
  ``prune_fraction`` of the remaining prunable weights, rewinds the survivors to level 0's rewind point.
- An evaluation job retrains a ticket on another task/subset: the rewind weights (whatever matches in
  name and shape: a new head where the class count differs) under the ticket's mask; ``random_reinit``
  keeps the mask with new random weights, ``random_prune`` keeps each layer's density with a random mask.

After any of these loads the method's momentum (EMA) targets are made copies of the loaded online network
(:meth:`Method.sync_targets`), so a MoCo key encoder, a BYOL target or a DINO teacher starts as the ticket,
not as the random network the method was built with.

The mask is computed on rank 0 and broadcast; it is written to ``mask.pt`` with ``sparsity.json``, and
enforced after every optimiser step (weights) and in every backward pass (gradients). The mask file names
the online parameters only; it is enforced on their momentum-target twins too (as CV_LTH_Pre-training
prunes ``encoder_k``), so a ticket trains in isolation.

Rewinding continues the schedule (open_lth's ``start_step``): a pruned level and every evaluation job
start at the rewind point's step ``k`` (:meth:`LotteryTicket.start_step`, in the job's own steps per
epoch) and train to the end, ``T - k`` steps, with every schedule (learning rate, warm-up, EMA momentum,
DINO's warm-ups) at ``k + i``. Parent jobs' files are read through the job contract
(:mod:`specs.contract`) from the same workspace.
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
from workers.methods.base import Method
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
    method: Method
    ctx: DistContext
    mask: Mask = field(default_factory=dict)  # the online network's prunable weights (what mask.pt holds)
    enforced: Mask = field(default_factory=dict)  # ``mask`` plus the same mask on the momentum targets' twins
    rewind_at: Step | None = None  # level 0: when to save the rewind point
    start_at: Step | None = None  # pruned levels and evaluations: the rewind point the schedule starts at
    hooks: list[Any] = field(default_factory=list)

    @property
    def level(self) -> int:
        return int(self.spec.lottery["level"])  # type: ignore[index]

    def start_step(self, steps_per_epoch: int) -> int:
        """The iteration this job's schedule starts at: 0 for level 0, else the rewind point's (``"3ep"``: 3
        epochs of this job's own loader, as open_lth's ``Step``)."""
        if self.start_at is None:
            return 0
        start, total = self.start_at.iteration(steps_per_epoch), self.spec.train.epochs * steps_per_epoch
        if start >= total:
            at = f"{self.start_at.count}{self.start_at.unit}"
            raise ValueError(f"lottery: the rewind point {at} is step {start} of this job, at or past the end "
                             f"of its {total} steps: nothing to train")
        return start

    def before_step(self, step: int, steps_per_epoch: int) -> None:
        """Level 0: save the rewind point when training reaches it (before that step's update)."""
        if self.rewind_at is not None and step == self.rewind_at.iteration(steps_per_epoch):
            self.save_rewind()

    def after_step(self) -> None:
        """Zero the pruned weights (and their target twins) again: weight decay, momentum and AMP never revive them."""
        if self.enforced:
            apply_mask(self.method, self.enforced)

    def save_rewind(self) -> None:
        if self.ctx.is_main and not self.paths.rewind.is_file():
            save_torch_atomic({"job_hash": self.spec.job_hash, "step": self.spec.lottery["rewind"],  # type: ignore[index]
                               "backbone": self.method.backbone.state_dict(),
                               "model": self.method.state_dict()}, self.paths.rewind)
            log.info("rewind point %s saved", self.spec.lottery["rewind"])  # type: ignore[index]

    def finish(self) -> dict[str, float]:
        """After training (the trainer has written ``final_weights.pt``): check the mask held; the metrics the
        lottery report reads."""
        if self.rewind_at is not None and not self.paths.rewind.is_file():
            raise RuntimeError(f"rewind point {self.rewind_at} was never reached: training is shorter")
        params = dict(self.method.named_parameters())
        revived = [n for n, m in self.enforced.items()
                   if bool((params[n].detach()[~m.to(params[n].device)] != 0).any())]
        if revived:
            raise RuntimeError(f"pruned weights are non-zero after training: {revived[:3]}")
        return {"weights_remaining": density(self.mask) if self.mask else 1.0, "lottery_level": float(self.level)}


def with_target_twins(method: Method, mask: Mask) -> Mask:
    """``mask`` plus, for every masked parameter with a momentum-target twin, the same mask on the twin."""
    twins = method.target_twins()
    return {**mask, **{twins[n]: m for n, m in mask.items() if n in twins}}


def setup_ticket(spec: JobSpec, job_dir: Path, method: Method, ctx: DistContext) -> LotteryTicket | None:
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
    method.sync_targets()  # the targets start as the loaded ticket (moco-v3 builder; CV_LTH loads both)
    ticket.mask, ticket.enforced = mask, with_target_twins(method, mask)
    apply_mask(method, ticket.enforced)
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
        ticket.method.sync_targets()  # before the rewind point "start" is saved
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


def _rewind_point(ticket: LotteryTicket, lot: dict[str, Any]) -> dict[str, Any]:
    """Level 0's rewind point; sets where this job's schedule starts (its ``step``, "start": 0)."""
    rewind = _load(parent_paths(ticket.paths.root, lot["rewind_job"]).rewind)
    ticket.start_at = None if rewind["step"] == REWIND_START else Step.parse(rewind["step"])
    return rewind


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
    method.load_state_dict(_rewind_point(ticket, lot)["model"])  # the same method and classes as level 0
    return mask


def _setup_eval(ticket: LotteryTicket, lot: dict[str, Any]) -> Mask:
    spec, method = ticket.spec, ticket.method
    source = parent_paths(ticket.paths.root, spec.depends_on[0])
    names = _names(ticket, lot)
    kind = lot["ticket"]
    rewind = _rewind_point(ticket, lot)["model"]
    if kind == "random_reinit":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed + REINIT_SEED_OFFSET)
            fresh = backbone_of(spec.train)
        method.backbone.load_state_dict(fresh.state_dict())
    else:
        new = transfer(method, rewind)
        log.info("ticket weights from the rewind point; new (not in it or another shape): %s", new)

    def compute() -> Mask:
        mask = _parent_mask(ticket, source, names)
        if kind == TICKET or kind == "random_reinit":
            return mask
        return get_strategy("random").prune({}, mask, 0.0, int(lot["level"]), _generator(spec))

    return _own_or(ticket, names, compute)
