"""``mae``: masked autoencoders (He et al. 2022; facebookresearch/mae ``models_mae.py``). ViT only.

Per sample, the patches are shuffled by the argsort of uniform noise and the first
``int(L x (1 - mask_ratio))`` are kept: the encoder (the timm ViT's patch embedding, position embedding,
blocks and norm) sees only those (plus the class token). A light decoder (``decoder_depth`` blocks of
``decoder_dim``) gets the visible tokens and a shared mask token for every masked position (with its own
position embeddings) and predicts the pixels of every patch. Position embeddings of the encoder and the
decoder are fixed 2-D sin-cos (``workers/methods/pos_embed.py``, not trained: ``requires_grad=False``, as
the reference's ``util/pos_embed.py``; a timm ViT's own are learnable, so MAE overwrites and freezes
them; a child job that fine-tunes the backbone trains them again from these values). The loss is the
mean squared error over the *masked* patches only, on per-patch normalised pixels with
``norm_pix_loss``. The grid refuses a non-ViT backbone (``specs.methods.check_method_config``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from workers.methods.base import Method
from workers.methods.pos_embed import sincos_2d

EVAL_MASK_SEED = 20220111  # the masks of every evaluation (mae_val_loss)


def random_masking(x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kept tokens N x int(L(1-r)) x D, mask N x L with 1 = removed, ids_restore N x L)."""
    n, length, dim = x.shape
    keep = int(length * (1 - mask_ratio))
    noise = torch.rand(n, length, device=x.device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(x, 1, ids_shuffle[:, :keep].unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(n, length, device=x.device)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """N x 3 x H x W -> N x L x (p * p * 3), patches in row-major order."""
    n, c, h, w = images.shape
    x = images.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Mean over the masked patches (``mask`` 1) of the per-patch MSE."""
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


class MAE(Method):
    name = "mae"
    recipe = "mae"

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, hparams: Any) -> None:
        super().__init__(backbone, feat_dim, num_classes, hparams)
        if not hasattr(backbone, "patch_embed") or not hasattr(backbone, "blocks"):
            raise ValueError(f"mae needs a timm Vision Transformer backbone, got {type(backbone).__name__}")
        from timm.models.vision_transformer import Block

        for name in ("fc_norm", "attn_pool", "head"):  # not in MAE's encoder path: no gradient (DDP needs all
            part = getattr(backbone, name, None)          # trainable parameters used), left as initialised
            if isinstance(part, nn.Module):
                part.requires_grad_(False)
        pe = backbone.patch_embed
        self.patch = int(pe.patch_size[0])
        self.num_patches = int(pe.num_patches)
        self.prefix = int(getattr(backbone, "num_prefix_tokens", 1))
        grid_h, grid_w = (int(g) for g in pe.grid_size)
        if backbone.pos_embed is not None:  # the encoder's: fixed sin-cos (zeros for a prefix that has one)
            pos = backbone.pos_embed
            with torch.no_grad():
                pos.copy_(sincos_2d(pos.shape[-1], grid_h, grid_w, prefix=pos.shape[1] - self.num_patches))
            pos.requires_grad_(False)
        dim, ddim = feat_dim, hparams.decoder_dim
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_pos = nn.Parameter(sincos_2d(ddim, grid_h, grid_w, prefix=self.prefix), requires_grad=False)
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder_blocks = nn.Sequential(*[Block(ddim, hparams.decoder_heads, mlp_ratio=4.0, qkv_bias=True)
                                              for _ in range(hparams.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(ddim)
        self.decoder_pred = nn.Linear(ddim, self.patch * self.patch * 3)
        self.last_visible = 0

    def _patch_pos(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(position embeddings of the prefix tokens or None, of the patches)."""
        pos = self.backbone.pos_embed
        if pos is None:
            return None, None
        if pos.shape[1] == self.num_patches:  # no_embed_class: prefix tokens carry no position
            return None, pos
        return pos[:, : self.prefix], pos[:, self.prefix:]

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(encoded prefix + visible tokens, mask, ids_restore); ``generator`` draws the masks."""
        vit = self.backbone
        x = vit.patch_embed(images)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        prefix_pos, patch_pos = self._patch_pos()
        if patch_pos is not None:
            x = x + patch_pos
        x, mask, ids_restore = random_masking(x, self.hparams.mask_ratio, generator)
        self.last_visible = x.shape[1]
        prefix = []
        if getattr(vit, "cls_token", None) is not None:
            cls = vit.cls_token + (prefix_pos[:, :1] if prefix_pos is not None else 0)
            prefix.append(cls.expand(x.shape[0], -1, -1))
        if getattr(vit, "reg_token", None) is not None:
            reg = vit.reg_token + (prefix_pos[:, 1:] if prefix_pos is not None else 0)
            prefix.append(reg.expand(x.shape[0], -1, -1))
        x = torch.cat([*prefix, x], dim=1)
        x = vit.norm(vit.blocks(vit.norm_pre(x)))
        return x, mask, ids_restore

    def decode(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Pixel predictions N x L x (p * p * 3) from the encoded prefix + visible tokens."""
        x = self.decoder_embed(x)
        pre, vis = x[:, : self.prefix], x[:, self.prefix:]
        masks = self.mask_token.expand(x.shape[0], ids_restore.shape[1] - vis.shape[1], -1)
        full = torch.cat([vis, masks], dim=1)
        full = torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
        x = torch.cat([pre, full], dim=1) + self.decoder_pos[:, : self.prefix + full.shape[1]]
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, self.prefix:])

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[list[torch.Tensor], torch.Tensor]]) -> dict[str, float]:
        """``mae_val_loss``: the training loss on the validation images (centre crops), with masks drawn from
        a fixed seed, so that every evaluation of every run masks the same patches and the values compare
        (lower is better: how well the model fills in patches it never saw)."""
        generator: torch.Generator | None = None
        total, count = 0.0, 0
        for views, _ in batches:
            images = views[0]
            if generator is None:
                generator = torch.Generator(device=images.device).manual_seed(EVAL_MASK_SEED)
            loss, _ = self.reconstruction_loss(images, generator)
            total, count = total + float(loss) * len(images), count + len(images)
        return {"mae_val_loss": total / max(1, count)}

    def reconstruction_loss(self, images: torch.Tensor, generator: torch.Generator | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked-patch loss of ``images``, the encoded prefix + visible tokens); ``generator`` draws the masks."""
        latent, mask, ids_restore = self.encode(images, generator)
        pred = self.decode(latent, ids_restore)
        loss = masked_mse(pred.float(), patchify(images, self.patch).float(), mask, self.hparams.norm_pix_loss)
        return loss, latent

    def training_loss(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        loss, latent = self.reconstruction_loss(views[0])
        if self.online_probe is not None:
            loss = loss + self.probe_loss(latent[:, 0] if self.prefix else latent.mean(dim=1), labels)
        return loss
