"""Batched augmentation ops (per-sample keyed randomness), the keyed draws and the recipe registry; no FFCV
needed (the keyed crop decoder is tested on real .beton files in test_data_loader.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from workers.data.augment import ColorJitter, GaussianBlur, RandomGrayscale, Solarize, adjust_hue, grayscale
from workers.data.draws import DRAWS, SampleDraws, make_draws, mix32
from workers.data.recipes import get_recipe, recipe_names


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draws(n: int, seed: int = 0, epoch: int = 0, first: int = 0) -> SampleDraws:
    """The draws of samples ``first .. first + n - 1`` of view 0."""
    return SampleDraws.for_batch(seed, epoch, 0, np.arange(first, first + n), torch.device("cpu"))


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
    out = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)(same.clone(), _draws(8))
    flat = out.flatten(1)
    assert all(not torch.allclose(flat[0], flat[i]) for i in range(1, 8))
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.0)(same.clone(), _draws(8)), same)
    again = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)(same.clone(), _draws(8))
    assert torch.equal(again, out)  # the same keys reproduce the batch exactly
    other_epoch = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)(same.clone(), _draws(8, epoch=1))
    assert not torch.allclose(other_epoch, out)


def test_grayscale_applies_to_about_p_of_the_samples() -> None:
    x = _images(400, size=4)
    out = RandomGrayscale(p=0.5)(x.clone(), _draws(400, seed=1))
    gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert 0.35 < gray.float().mean() < 0.65
    torch.testing.assert_close(out[gray][:, :1], grayscale(x[gray]))
    torch.testing.assert_close(out[~gray], x[~gray])


def test_blur_keeps_flat_images_and_varies_its_sigma_per_sample() -> None:
    flat = torch.full((3, 3, 20, 20), 0.3)
    torch.testing.assert_close(GaussianBlur(p=1.0)(flat.clone(), _draws(3)), flat)
    noise = _images(1, size=64).expand(16, -1, -1, -1).clone()
    out = GaussianBlur(p=1.0, sigma=(0.1, 2.0), ref_size=64)(noise.clone(), _draws(16, seed=2))
    spread = out.flatten(1).std(dim=1)
    assert (spread < noise.flatten(1).std(dim=1) + 1e-6).all() and spread.max() - spread.min() > 0.02
    tiny = GaussianBlur(p=1.0)(_images(2, size=5), _draws(2))  # kernel capped for tiny local crops
    assert tiny.shape == (2, 3, 5, 5)


def test_solarize_inverts_bright_pixels() -> None:
    x = torch.tensor([0.1, 0.49, 0.5, 0.9]).view(1, 1, 1, 4).expand(1, 3, 1, 4).clone()
    out = Solarize(p=1.0)(x.clone(), _draws(1))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.1, 0.49, 0.5, 0.1]))
    torch.testing.assert_close(Solarize(p=0.0)(x.clone(), _draws(1)), x)


def test_a_sample_is_augmented_the_same_in_any_batch() -> None:
    """Draws are keyed per sample: sample 5 alone, first or last in a batch gets the same augmentation."""
    recipe = get_recipe("byol").views[1]  # jitter, grayscale, blur p=0.1, solarize p=0.2
    x = _images(8, size=16)

    def augment(rows: list[int]) -> torch.Tensor:
        draws = SampleDraws.for_batch(3, 2, 1, np.array(rows) + 100, torch.device("cpu"))
        y = x[rows].clone()
        for op in recipe.ops:
            y = op(y, draws)
        return y

    whole = augment(list(range(8)))
    assert torch.equal(augment([5])[0], whole[5])
    assert torch.equal(augment([5, 0, 7])[0], whole[5]) and torch.equal(augment([7, 2, 5])[2], whole[5])


def test_keyed_uniforms_are_uniform_and_the_same_in_every_numeric_world() -> None:
    """One source for Python ints, int64 tensors/arrays and numba (FFCV's JIT): identical values."""
    import numba

    keys = torch.arange(20_000, dtype=torch.int64)
    u = DRAWS.unit(keys, 7).numpy()
    assert u.min() >= 0.0 and u.max() < 1.0
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert counts.min() > 1800 and counts.max() < 2200  # 2,000 expected per bin
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.03  # neighbouring keys are not correlated
    assert abs(np.corrcoef(u, DRAWS.unit(keys, 8).numpy())[0, 1]) < 0.03  # nor are successive draws
    compiled = make_draws(numba.njit)
    for key in (0, 1, 123_456_789, 2**32 - 1):
        for n in (0, 5, 40):
            assert compiled.unit(key, n) == DRAWS.unit(key, n) == float(DRAWS.unit(torch.tensor([key]), n)[0])
            assert compiled.derive(key, n) == DRAWS.derive(key, n) == int(DRAWS.derive(np.int64(key), n))
    assert mix32(0) == 0 and DRAWS.derive(0, 0) != 0


def test_keyed_random_crop_follows_torchvision_bounds() -> None:
    """The keyed decoder's crop (workers.data.keyed_crop): inside the image, area and aspect ratio in range
    (or torchvision's centre fallback), a pure function of the key, spread over the image."""
    from workers.data.keyed_crop import make_random_crop

    crop = make_random_crop(DRAWS)
    scale, ratio = np.array([0.2, 1.0]), np.array([3 / 4, 4 / 3])
    boxes = [crop(40, 30, scale, ratio, key) for key in range(2000)]
    for i, j, h, w in boxes:
        assert i >= 0 and i + h <= 40 and j >= 0 and j + w <= 30
        assert 0.2 * 1200 * 0.9 <= h * w <= 1200 and 3 / 4 * 0.85 <= w / h <= 4 / 3 * 1.15
    assert crop(40, 30, scale, ratio, 17) == boxes[17]
    assert len(set(boxes)) > 1500 and len({i for i, *_ in boxes}) > 10
    assert crop(10, 100, np.array([0.99, 1.0]), ratio, 3) == (0, 43, 10, 13)  # no fit: centre, widest ratio


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
