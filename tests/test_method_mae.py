"""MAE: per-sample masking, encoder on the visible tokens only, loss on masked patches only; ViT only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specs.backbones import create_backbone
from specs.job import TrainConfig
from specs.methods import MAEHparams
from tests.method_helpers import make, views_for
from workers.methods.mae import MAE, masked_mse, patchify, random_masking
from workers.schedule import build_optimizer, optimizer_step


def test_encoder_sees_int_l_times_one_minus_ratio_tokens() -> None:
    m = make("mae", backbone="test_vit", mask_ratio=0.5)
    seen = []
    m.backbone.blocks.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[1]))
    loss = m(views_for(m, n=4), torch.zeros(4, dtype=torch.long))
    length = m.num_patches  # 4 patches of 16 px in a 32 px image
    assert seen == [1 + int(length * (1 - 0.5))] and m.last_visible == int(length * 0.5)
    assert torch.isfinite(loss)


def test_masking_is_per_sample_and_restorable() -> None:
    torch.manual_seed(0)
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 16, 1).expand(2, 16, 3).contiguous()
    kept, mask, restore = random_masking(x, 0.75)
    assert kept.shape == (2, 4, 3) and mask.sum(dim=1).tolist() == [12.0, 12.0]
    for i in range(2):
        visible = x[i, mask[i] == 0]
        assert sorted(visible[:, 0].tolist()) == sorted(kept[i, :, 0].tolist())
    _, many, _ = random_masking(torch.zeros(64, 16, 3), 0.75)
    assert len({tuple(row.tolist()) for row in many}) > 1  # drawn per sample, not one mask per batch
    assert torch.equal(torch.gather(torch.argsort(restore, dim=1), 1, restore), torch.arange(16).expand(2, 16))


def test_loss_ignores_visible_patches() -> None:
    target = torch.randn(2, 4, 12)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 1, 1]])
    pred = torch.randn(2, 4, 12)
    base = masked_mse(pred, target, mask, norm_pix=True)
    changed = pred.clone()
    changed[mask == 0] += 100.0
    torch.testing.assert_close(masked_mse(changed, target, mask, norm_pix=True), base)
    changed[mask == 1] += 1.0
    assert not torch.allclose(masked_mse(changed, target, mask, norm_pix=True), base)


def test_patchify_round_trip_order() -> None:
    img = torch.arange(3 * 4 * 4, dtype=torch.float32).view(1, 3, 4, 4)
    patches = patchify(img, 2)
    assert patches.shape == (1, 4, 12)
    torch.testing.assert_close(patches[0, 1].view(2, 2, 3).permute(2, 0, 1), img[0, :, 0:2, 2:4])


def _reference_sincos(dim: int, grid: int) -> np.ndarray:
    """MAE's util/pos_embed.py get_2d_sincos_pos_embed(dim, grid, cls_token=True), transcribed in numpy."""
    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coords = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)), axis=0)
    emb = np.concatenate([one_d(dim // 2, coords[0]), one_d(dim // 2, coords[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0)


def test_position_embeddings_are_fixed_2d_sincos_and_not_trained() -> None:
    m = make("mae", backbone="test_vit", mask_ratio=0.5)
    grid = int(m.backbone.patch_embed.grid_size[0])
    assert grid == 2
    for pos, dim in ((m.decoder_pos, 32), (m.backbone.pos_embed, m.feat_dim)):
        assert not pos.requires_grad and pos.shape == (1, 1 + grid * grid, dim)
        np.testing.assert_allclose(pos[0].numpy(), _reference_sincos(dim, grid), atol=1e-6)
    before = (m.decoder_pos.clone(), m.backbone.pos_embed.clone(), m.decoder_embed.weight.clone())
    opt = build_optimizer(m, TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.05))
    for _ in range(2):
        optimizer_step(opt, torch.amp.GradScaler(enabled=False), m(views_for(m, n=4), torch.zeros(4, dtype=torch.long)),
                       [p for p in m.parameters() if p.requires_grad], 0.0)
    assert torch.equal(m.decoder_pos, before[0]) and torch.equal(m.backbone.pos_embed, before[1])
    assert not torch.equal(m.decoder_embed.weight, before[2])  # while the rest trains


def test_non_vit_backbone_is_refused() -> None:
    b = create_backbone("test_resnet", 32)
    with pytest.raises(ValueError, match="Vision Transformer"):
        MAE(b, b.num_features, 4, MAEHparams())


def test_grid_with_mae_on_a_resnet_exits_2_and_records_nothing(tmp_path, meta_dir) -> None:  # type: ignore[no-untyped-def]
    from tests.test_grid_validation import GOOD, launch_cli, write

    path = write(tmp_path, GOOD.replace("[methods.supervised]", '[methods.mae]\nbackbone = "resnet18"\n'
                                                                "[methods.supervised]"))
    db = tmp_path / "db.sqlite"
    proc = launch_cli(path, db)
    assert proc.returncode == 2, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        f"error: {path}: methods.mae.backbone: expected a Vision Transformer for mae (e.g. vit_base_patch16_224), "
        "got 'resnet18'"]
    assert not db.exists()


def test_grid_with_mae_on_a_vit_is_accepted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.grid import load_grid
    from tests.conftest import write_meta_dir
    from tests.test_grid_validation import GOOD, write

    write_meta_dir(tmp_path / "ds")
    grid = load_grid(write(tmp_path, GOOD.replace("[methods.supervised]", '[methods.mae]\nbackbone = "test_vit"\n'
                                                                         "[methods.supervised]")))
    assert grid.methods["mae"].method == "mae"
