"""Fixed 2-D sine-cosine position embeddings (MAE ``util/pos_embed.py``, after MoCo v3).

For a grid of ``h x w`` patches in row-major order, the first half of each embedding encodes the patch's
column and the second half its row, each as ``[sin(p * omega), cos(p * omega)]`` with
``omega_i = 1 / 10000^(i / (D/4))``; prefix tokens (class, register tokens) get zeros.
"""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``len(positions) x dim``: sines then cosines of the positions at ``dim / 2`` frequencies."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int, prefix: int = 0) -> torch.Tensor:
    """``1 x (prefix + h w) x dim`` float32 position embeddings (``dim`` a multiple of 4)."""
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], dim=1)
    return torch.cat([torch.zeros(prefix, dim, dtype=emb.dtype), emb]).float()[None]
