"""MAE: per-sample masking, encoder on the visible tokens only, loss on masked patches only; ViT only."""

from __future__ import annotations

import pytest
import torch

from specs.backbones import create_backbone
from specs.methods import MAEHparams
from tests.method_helpers import make, views_for
from workers.methods.mae import MAE, masked_mse, patchify, random_masking


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
