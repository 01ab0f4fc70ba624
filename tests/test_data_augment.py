"""Batched augmentation ops (per-sample randomness) and the recipe registry; no FFCV needed."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from workers.data.augment import ColorJitter, GaussianBlur, RandomGrayscale, Solarize, adjust_hue, grayscale
from workers.data.recipes import get_recipe, recipe_names


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 6, size: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=_gen(seed))


def test_hue_shift_matches_torchvision_per_sample() -> None:
    x = _images(4)
    shifts = torch.tensor([-0.4, -0.1, 0.05, 0.3])
    ours = adjust_hue(x.clone(), shifts)
    for i, s in enumerate(shifts.tolist()):
        torch.testing.assert_close(ours[i], TF.adjust_hue(x[i], s), atol=2e-3, rtol=0)


def test_colour_jitter_draws_its_parameters_per_sample() -> None:
    same = _images(1).expand(8, -1, -1, -1).clone()
    out = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)(same.clone(), _gen())
    flat = out.flatten(1)
    assert all(not torch.allclose(flat[0], flat[i]) for i in range(1, 8))
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.0)(same.clone(), _gen()), same)
    again = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)(same.clone(), _gen())
    torch.testing.assert_close(again, out)  # a seeded generator reproduces the batch


def test_grayscale_applies_to_about_p_of_the_samples() -> None:
    x = _images(400, size=4)
    out = RandomGrayscale(p=0.5)(x.clone(), _gen(1))
    gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert 0.35 < gray.float().mean() < 0.65
    torch.testing.assert_close(out[gray][:, :1], grayscale(x[gray]))
    torch.testing.assert_close(out[~gray], x[~gray])


def test_blur_keeps_flat_images_and_varies_its_sigma_per_sample() -> None:
    flat = torch.full((3, 3, 20, 20), 0.3)
    torch.testing.assert_close(GaussianBlur(p=1.0)(flat.clone(), _gen()), flat)
    noise = _images(1, size=64).expand(16, -1, -1, -1).clone()
    out = GaussianBlur(p=1.0, sigma=(0.1, 2.0), ref_size=64)(noise.clone(), _gen(2))
    spread = out.flatten(1).std(dim=1)
    assert (spread < noise.flatten(1).std(dim=1) + 1e-6).all() and spread.max() - spread.min() > 0.02
    tiny = GaussianBlur(p=1.0)(_images(2, size=5), _gen())  # kernel capped for tiny local crops
    assert tiny.shape == (2, 3, 5, 5)


def test_solarize_inverts_bright_pixels() -> None:
    x = torch.tensor([0.1, 0.49, 0.5, 0.9]).view(1, 1, 1, 4).expand(1, 3, 1, 4).clone()
    out = Solarize(p=1.0)(x.clone(), _gen())
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.1, 0.49, 0.5, 0.1]))
    torch.testing.assert_close(Solarize(p=0.0)(x.clone(), _gen()), x)


def test_recipe_registry() -> None:
    assert recipe_names() == ["byol", "dino", "eval", "exemplar", "mae", "mocov1", "mocov2", "simclr", "supervised"]
    views = {name: get_recipe(name).num_views for name in recipe_names()}
    assert views == {"eval": 1, "supervised": 1, "simclr": 2, "mocov1": 2, "mocov2": 2, "byol": 2, "dino": 10,
                     "mae": 1, "exemplar": 8}
    assert get_recipe("exemplar:3").num_views == 3
    dino = get_recipe("dino:3")
    assert dino.num_views == 5 and [v.output_size(224) for v in dino.views] == [224, 224, 96, 96, 96]
    byol = get_recipe("byol").views
    blur_p = [next(op.p for op in v.ops if isinstance(op, GaussianBlur)) for v in byol]
    assert blur_p == [1.0, 0.1]
    assert [any(isinstance(op, Solarize) for op in v.ops) for v in byol] == [False, True]
    assert get_recipe("eval").views[0].crop == "center" and not get_recipe("eval").views[0].flip
    for bad in ("nope", "simclr:2", "dino:x"):
        with pytest.raises(ValueError, match="recipe"):
            get_recipe(bad)
