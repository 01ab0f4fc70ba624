"""Batched image ops with per-sample randomness, on whatever device the batch is on.

FFCV 1.0.2 decodes, crops and flips; the colour ops of the SSL recipes (colour jitter, grayscale,
Gaussian blur, solarisation) are applied here to float batches (N x 3 x H x W, values in [0, 1]).
torchvision's v2 transforms draw one set of parameters per call, i.e. per *batch*; these ops draw
every parameter (whether to apply, factors, sigma, the jitter order) per *sample*, like the papers'
per-image PIL pipelines. Each op takes the batch's :class:`~workers.data.draws.SampleDraws`: sample
``i``'s draws depend on its own key only (job seed, epoch, view, sample index), so an augmented sample
is the same whatever batch, thread or rank it comes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from workers.data.draws import SampleDraws

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL and torchvision


def _uniform(lo: float, hi: float, draws: SampleDraws) -> torch.Tensor:
    """One uniform in [lo, hi) per sample of the batch."""
    return lo + (hi - lo) * draws.rand()


def _chosen(p: float, draws: SampleDraws) -> torch.Tensor:
    """Indices of the samples an op with probability ``p`` applies to."""
    if p >= 1.0:
        return torch.arange(len(draws), device=draws.keys.device)
    return torch.nonzero(draws.rand() < p).squeeze(1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of ``x`` (N x 3 x H x W) as N x 1 x H x W."""
    w = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> HSV with hue in [0, 1) (N x 3 x H x W)."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(dim=1)
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) + 6.0 * h.unsqueeze(1)) % 6
    t = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v.unsqueeze(1) - v.unsqueeze(1) * s.unsqueeze(1) * t


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each sample by ``shift[i]`` (a fraction of the colour circle, in [-0.5, 0.5])."""
    hsv = rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(hsv)


@dataclass(frozen=True)
class ColorJitter:
    """torchvision's ``ColorJitter(brightness, contrast, saturation, hue)`` applied with probability ``p``.

    Factors are drawn per sample from ``[max(0, 1 - b), 1 + b]`` (hue: ``[-h, h]``) and the four
    adjustments are applied in a random order drawn per sample.
    """

    brightness: float
    contrast: float
    saturation: float
    hue: float
    p: float = 0.8

    def __call__(self, x: torch.Tensor, draws: SampleDraws) -> torch.Tensor:
        idx = _chosen(self.p, draws)
        factors = [
            _uniform(max(0.0, 1 - self.brightness), 1 + self.brightness, draws)[idx],
            _uniform(max(0.0, 1 - self.contrast), 1 + self.contrast, draws)[idx],
            _uniform(max(0.0, 1 - self.saturation), 1 + self.saturation, draws)[idx],
            _uniform(-self.hue, self.hue, draws)[idx],
        ]
        order = torch.argsort(draws.rand(4), dim=1)[idx]
        if idx.numel() == 0:
            return x
        y = x[idx]
        for step in range(4):
            for op in range(4):
                sel = torch.nonzero(order[:, step] == op).squeeze(1)
                if sel.numel():
                    y[sel] = self._apply(op, y[sel], factors[op][sel])
        x[idx] = y
        return x

    def _apply(self, op: int, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        if op == 0:
            return (y * f.view(-1, 1, 1, 1)).clamp_(0, 1)
        if op == 1:
            return _blend(y, grayscale(y).mean(dim=(1, 2, 3), keepdim=True), f)
        if op == 2:
            return _blend(y, grayscale(y), f)
        return adjust_hue(y, f)


@dataclass(frozen=True)
class RandomGrayscale:
    """Replace a sample by its luma (in all three channels) with probability ``p``."""

    p: float = 0.2

    def __call__(self, x: torch.Tensor, draws: SampleDraws) -> torch.Tensor:
        idx = _chosen(self.p, draws)
        if idx.numel():
            x[idx] = grayscale(x[idx]).expand(-1, 3, -1, -1)
        return x


@dataclass(frozen=True)
class GaussianBlur:
    """Gaussian blur with probability ``p`` and a per-sample sigma drawn from ``sigma`` (pixels).

    The papers' sigmas are for crops of ``ref_size`` pixels (224 global, 96 DINO local); for other
    crop sizes sigma scales with the crop so that the blur covers the same fraction of the image.
    """

    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)
    ref_size: int = 224

    def __call__(self, x: torch.Tensor, draws: SampleDraws) -> torch.Tensor:
        idx = _chosen(self.p, draws)
        scale = x.shape[-1] / self.ref_size
        sigma = _uniform(self.sigma[0], self.sigma[1], draws)[idx] * scale
        n = idx.numel()
        if n == 0:
            return x
        radius = max(1, min(math.ceil(3 * self.sigma[1] * scale), (min(x.shape[-2:]) - 1) // 2))
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(3, dim=0)  # (n*3, k)
        y = x[idx].reshape(1, n * 3, *x.shape[-2:])
        y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
        y = F.conv2d(y, kernel.view(n * 3, 1, 1, -1), groups=n * 3)
        y = F.conv2d(y, kernel.view(n * 3, 1, -1, 1), groups=n * 3)
        x[idx] = y.view(n, 3, *x.shape[-2:])
        return x


@dataclass(frozen=True)
class Solarize:
    """Invert the pixels at or above ``threshold`` with probability ``p`` (PIL's ``solarize(128)``)."""

    p: float = 0.2
    threshold: float = 0.5

    def __call__(self, x: torch.Tensor, draws: SampleDraws) -> torch.Tensor:
        idx = _chosen(self.p, draws)
        if idx.numel():
            y = x[idx]
            x[idx] = torch.where(y >= self.threshold, 1.0 - y, y)
        return x
