"""What the generative methods (JSIA-ReID, D2RL) share: GAN images in [-1, 1] from ImageNet-normalised batches, the
names `image_translations` reports, the smallest image their discriminators take, and their option checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..core import ConfigError
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

# image_translations' names (what reports caption) -> the keys of a method's translation pass
TRANSLATION_KEYS = {"real_visible": "rgb", "real_infrared": "ir", "reconstructed_visible": "rec_rgb",
                    "reconstructed_infrared": "rec_ir", "fake_infrared": "fake_ir", "fake_visible": "fake_rgb",
                    "cycle_visible": "cyc_rgb", "cycle_infrared": "cyc_ir"}


def _channel(values: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)


def to_gan_image(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """ImageNet-normalised RGB (B, 3, H, W) -> [0, 1], antialiased bicubic resize to `size` when given and different
    (JSIA's GAN loader resizes the file bicubically), clamped, mapped to [-1, 1]."""
    x = x * _channel(IMAGENET_STD, x) + _channel(IMAGENET_MEAN, x)
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0) * 2.0 - 1.0


def from_gan_image(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A GAN image in [-1, 1] as a re-ID network takes it: bilinear resize to `size` when given and different (as
    JSIA's Encoder.forward), [-1, 1] -> [0, 1], ImageNet normalisation."""
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return (x * 0.5 + 0.5 - _channel(IMAGENET_MEAN, x)) / _channel(IMAGENET_STD, x)


def translation_images(t: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A translation pass's images ([-1, 1]) under `image_translations`' names, in [0, 1]."""
    return {name: (t[key] * 0.5 + 0.5).clamp(0, 1) for name, key in TRANSLATION_KEYS.items()}


def discriminator_min_side(layers: int, scales: int) -> int:
    """The smallest image side a multi-scale discriminator takes: every reflect-padded conv needs an input wider than
    its padding, so the coarsest scale (side / 2**(scales - 1)) must survive `layers` halvings: 2**(layers+scales-1)."""
    return 2 ** (layers + scales - 1)


def adam_betas(values: list) -> tuple[float, float]:
    """A config's [beta1, beta2] as Adam takes them."""
    return float(values[0]), float(values[1])


def check_choices(choices: Mapping[str, tuple[Any, tuple]]) -> None:
    """ConfigError for the first `method.<key>` whose value is not among its allowed ones."""
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"method.{key} must be one of {allowed}, got {value!r}")


def check_betas(opts: Any, *keys: str) -> None:
    """ConfigError unless each `method.<key>` is two numbers in [0, 1)."""
    for key in keys:
        betas = getattr(opts, key)
        if len(betas) != 2 or not all(0 <= float(b) < 1 for b in betas):
            raise ConfigError(f"method.{key} must be two numbers in [0, 1), got {betas!r}")
