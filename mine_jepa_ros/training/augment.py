"""Batched view augmentations on the training device (no per-sample Python, no CPU round trip).

Every sample gets its own random parameters, drawn from a ``torch.Generator`` so that a run is
reproducible (and resumable) step for step. Crop, flips and rotation are folded into one affine
transform per sample and applied with a single ``grid_sample``; the Gaussian blur is a separable
per-sample convolution (grouped conv).

* ``sonar`` (the paper's finding): horizontal + vertical flip, random resized crop (scale 0.5-1),
  rotation within +-15 degrees, Gaussian blur. No colour/intensity distortions.
* ``natural`` (the ablation): the usual natural-image recipe as far as it applies to one channel:
  random resized crop (scale 0.08-1), horizontal flip, brightness/contrast jitter, solarisation,
  Gaussian blur. (Hue/saturation jitter and grayscale conversion are no-ops on a single channel.)

Inputs and outputs are 0..1 intensities, (B, 1, H, W); normalisation happens afterwards.

:func:`intensity_augment` (fine-tuning, ``probe --intensity-augment``) is the other side of a
survey a model has not seen: what changes between sonars, settings and seabeds while the objects
stay the same. Per window: a gain, a residual of time-varied gain (an exponential ramp across the
window's columns, the range axis), a gamma, and multiplicative speckle (unit-mean noise with the
variance of L-look speckle, log-normal so that the generator draws it). Geometry is untouched, so
token targets stay valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.5
    rotation_deg: float = 15.0
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    brightness: float = 0.0
    contrast: float = 0.0
    solarize_p: float = 0.0


AUGMENTATIONS: dict[str, AugmentConfig] = {
    "sonar": AugmentConfig(),
    "natural": AugmentConfig(crop_scale=(0.08, 1.0), vflip=0.0, rotation_deg=0.0, brightness=0.4, contrast=0.4, solarize_p=0.2),
    "flips": AugmentConfig(crop_scale=(1.0, 1.0), rotation_deg=0.0, blur_p=0.0),  # light: supervised fine-tuning
}


@dataclass(frozen=True)
class Draws:
    """Random numbers for ``b`` samples that are rows ``offset .. offset + b`` of a batch of ``total``:
    every draw is made for the whole batch and sliced, so a rank holding a share of the global batch
    under torchrun gets exactly the numbers one process would give those samples."""

    g: torch.Generator
    device: torch.device
    b: int
    offset: int = 0
    total: int = 0  # 0: the batch is these b samples

    def rand(self) -> torch.Tensor:
        n = self.total or self.b
        return torch.rand(n, generator=self.g, device=self.device)[self.offset : self.offset + self.b]

    def uniform(self, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * self.rand()


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, share: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """One random view of every sample in ``x`` (B, 1, H, W); ``share`` = (offset, global batch size)
    when ``x`` is part of a larger batch (:class:`Draws`)."""
    b, _, h, w = x.shape
    draw = Draws(g, x.device, b, *share)
    # Random resized crop: area fraction s, aspect ratio r -> crop half-sizes in [-1, 1] units.
    s = draw.uniform(*cfg.crop_scale)
    log_r = draw.uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    r = torch.exp(log_r)
    sx = torch.sqrt(s * r).clamp(max=1.0)
    sy = torch.sqrt(s / r).clamp(max=1.0)
    cx = (1 - sx) * (2 * draw.rand() - 1)
    cy = (1 - sy) * (2 * draw.rand() - 1)
    fx = torch.where(draw.rand() < cfg.hflip, -1.0, 1.0)
    fy = torch.where(draw.rand() < cfg.vflip, -1.0, 1.0)
    theta = torch.deg2rad(draw.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    cos, sin = torch.cos(theta), torch.sin(theta)
    mat = torch.stack([
        torch.stack([cos * sx * fx, -sin * sy * fy, cx], dim=1),
        torch.stack([sin * sx * fx, cos * sy * fy, cy], dim=1),
    ], dim=1)
    grid = F.affine_grid(mat.to(x.dtype), [b, 1, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.brightness > 0 or cfg.contrast > 0:
        bright = draw.uniform(1 - cfg.brightness, 1 + cfg.brightness).view(b, 1, 1, 1)
        contrast = draw.uniform(1 - cfg.contrast, 1 + cfg.contrast).view(b, 1, 1, 1)
        mean = out.mean(dim=(2, 3), keepdim=True)
        out = ((out * bright - mean) * contrast + mean).clamp(0, 1)
    if cfg.solarize_p > 0:
        sol = (draw.rand() < cfg.solarize_p).view(b, 1, 1, 1)
        out = torch.where(sol & (out >= 0.5), 1.0 - out, out)
    if cfg.blur_p > 0:
        out = _gaussian_blur(out, cfg, draw)
    return out


def _gaussian_blur(x: torch.Tensor, cfg: AugmentConfig, draw: Draws) -> torch.Tensor:
    b, _, h, w = x.shape
    dev = x.device
    sigma = draw.uniform(*cfg.blur_sigma)
    apply = draw.rand() < cfg.blur_p
    radius = 4
    t = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
    kernel = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    identity = torch.zeros_like(kernel)
    identity[:, radius] = 1.0
    kernel = torch.where(apply[:, None], kernel, identity)
    y = x.reshape(1, b, h, w)
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(b, 1, 1, -1), groups=b)
    y = F.conv2d(y, kernel.view(b, 1, -1, 1), groups=b)
    return y.reshape(b, 1, h, w)


@dataclass(frozen=True)
class IntensityConfig:
    gain: tuple[float, float] = (0.6, 1.6)  # multiplicative, log-uniform
    tvg_residual: float = 0.6  # the ramp's log-gain from one side of the window to the other, uniform in +-this
    gamma: tuple[float, float] = (0.7, 1.4)  # log-uniform
    speckle_p: float = 0.5  # share of windows with speckle
    speckle_looks: tuple[float, float] = (4.0, 16.0)  # the gamma noise's shape (more looks: weaker speckle)


def intensity_augment(x: torch.Tensor, g: torch.Generator, cfg: IntensityConfig = IntensityConfig()) -> torch.Tensor:
    """Gain, TVG residual, gamma and speckle, drawn per window, on 0..1 intensities (B, 1, H, W)."""
    b, _, _, w = x.shape
    draw = Draws(g, x.device, b)
    gain = torch.exp(draw.uniform(math.log(cfg.gain[0]), math.log(cfg.gain[1]))).view(b, 1, 1, 1)
    slope = draw.uniform(-cfg.tvg_residual, cfg.tvg_residual).view(b, 1, 1, 1)
    ramp = torch.exp(slope * (torch.linspace(-0.5, 0.5, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)))
    gamma = torch.exp(draw.uniform(math.log(cfg.gamma[0]), math.log(cfg.gamma[1]))).view(b, 1, 1, 1)
    out = (x * gain * ramp).clamp(0, 1) ** gamma
    looks = draw.uniform(*cfg.speckle_looks).view(b, 1, 1, 1)
    speckled = draw.rand().view(b, 1, 1, 1) < cfg.speckle_p
    sigma = torch.sqrt(torch.log1p(1 / looks))  # log-normal with the mean (1) and variance (1/L) of L-look speckle
    noise = torch.exp(sigma * torch.randn(out.shape, generator=g, device=x.device, dtype=x.dtype) - sigma**2 / 2)
    return torch.where(speckled, out * noise, out).clamp(0, 1)


def make_views(x: torch.Tensor, views: int, cfg: AugmentConfig, g: torch.Generator,
               share: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """(V, B, 1, H, W) independent augmented views (``share``: see :func:`augment`)."""
    return torch.stack([augment(x, cfg, g, share) for _ in range(views)])
