"""``dino``: self-distillation with no labels (Caron et al. 2021; facebookresearch/dino ``main_dino.py``).

Student = backbone + DINO head (3-layer MLP with GELU -> L2-normalised bottleneck -> weight-normalised
linear layer of ``out_dim``); teacher = an EMA of both (cosine schedule from ``momentum`` to 1). Every
crop goes through the student (multi-crop: one pass per resolution), only the 2 global crops through the
teacher. Loss: the mean, over every (teacher global crop, student crop) pair of *different* views, of
``-softmax((t - center) / T_t) . log_softmax(s / T_s)``; with 2 global + N local crops that is 2(N + 1)
terms. ``center`` is an EMA (``center_momentum``) of the teacher outputs' mean over the global batch
(all-reduced over ranks). The teacher temperature warms up linearly from ``warmup_teacher_temp`` to
``teacher_temp`` over ``warmup_teacher_temp_epochs``; the last layer gets zero gradient during the first
``freeze_last_layer_epochs`` (its weight norm is fixed, so weight decay cannot move its output either).
Epochs come from the checkpointed optimiser-step counter, so a resumed job keeps its schedule.
Evaluation (kNN, linear probe) and ``final_weights.pt`` use the teacher backbone, as the reference's
``eval_knn.py`` / ``eval_linear.py`` (``--checkpoint_key teacher``); the weight-decay schedule
(``weight_decay_end``) is applied by the trainer (``workers/schedule.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workers.methods.base import Method, enable_any_input_size, multi_crop_forward
from workers.methods.collective import all_reduce_sum_, world_rank


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> linear layer with unit-norm rows (``norm_last_layer``)."""

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last_weight = nn.Parameter(torch.empty(out_dim, bottleneck))
        nn.init.trunc_normal_(self.last_weight, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.freeze_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        w = self.last_weight
        if self.freeze_last:  # zero gradient (not None, so DDP's reducer still sees it)
            w = w.detach() + 0 * w
        return x @ F.normalize(w, dim=1).t()


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, n_crops: int,
              student_temp: float, teacher_temp: float) -> tuple[torch.Tensor, int]:
    """(mean cross-entropy over every pair of different views, the number of pairs).

    ``student``: n_crops chunks of B rows (globals first); ``teacher``: 2 chunks (the globals)."""
    s_chunks = (student / student_temp).chunk(n_crops)
    t_chunks = F.softmax((teacher - center) / teacher_temp, dim=-1).detach().chunk(2)
    total, terms = student.new_zeros(()), 0
    for iq, q in enumerate(t_chunks):
        for v, s in enumerate(s_chunks):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
            terms += 1
    return total / terms, terms


class DINO(Method):
    name = "dino"

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__(backbone, feat_dim, num_classes, hparams)
        self.recipe = f"dino:{hparams.local_crops}"
        if hparams.local_crops:
            enable_any_input_size(backbone)
        self.head = DINOHead(feat_dim, hparams.hidden_dim, hparams.bottleneck_dim, hparams.out_dim)
        self.teacher_backbone = self.momentum_copy(self.backbone, hparams.momentum)
        self.teacher_head = self.momentum_copy(self.head, hparams.momentum)
        self.register_buffer("center", torch.zeros(1, hparams.out_dim))
        self.last_terms = 0

    def eval_backbone(self) -> nn.Module:
        """The teacher backbone (the network DINO's references evaluate and publish)."""
        return self.teacher_backbone

    def teacher_temp(self) -> float:
        """The teacher temperature of the current epoch (linear warm-up, then constant)."""
        hp = self.hparams
        if self.epoch < hp.warmup_teacher_temp_epochs:
            frac = self.epoch / max(1, hp.warmup_teacher_temp_epochs - 1)  # np.linspace, as the reference
            return hp.warmup_teacher_temp + (hp.teacher_temp - hp.warmup_teacher_temp) * frac
        return hp.teacher_temp

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """``center = m center + (1 - m) mean(teacher outputs over every rank)``."""
        world, _ = world_rank()
        batch_center = all_reduce_sum_(teacher.float().sum(dim=0, keepdim=True)) / (teacher.shape[0] * world)
        m = self.hparams.center_momentum
        self.center.mul_(m).add_(batch_center, alpha=1 - m)

    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        self.head.freeze_last = self.epoch < self.hparams.freeze_last_layer_epochs
        n = views[0].shape[0]
        feats = multi_crop_forward(self.backbone, views)
        student = self.head(feats)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(torch.cat(views[:2], dim=0)))
        loss, self.last_terms = dino_loss(student.float(), teacher.float(), self.center, len(views),
                                          self.hparams.student_temp, self.teacher_temp())
        self.update_center(teacher)
        return loss + self.probe_loss(feats[:n], labels)
