"""Image transforms for training and evaluation, driven by an explicit numpy Generator.

Inputs are (H, W, 3) uint8 arrays already LANCZOS-resized to the model size (see
``vireid.data.cache.decode_resized``); outputs are float32 (3, H, W) tensors in ImageNet-normalised
space. Every random draw comes from the ``numpy.random.Generator`` passed in; the training set
derives one per sample with ``sample_rng(seed, epoch, position)``, where ``position`` is the
sample's place in the epoch's global batch list, so augmentation is identical whatever the number
of DataLoader workers or DDP ranks.

Public API:

- ``IMAGENET_MEAN``, ``IMAGENET_STD``: (0.485, 0.456, 0.406), (0.229, 0.224, 0.225).
- ``to_normalized_tensor(img) -> Tensor``: ToTensor then Normalize, (x / 255 - mean) / std, bitwise
  the same as torchvision's.
- ``sample_rng(seed, epoch, position) -> Generator``.
- geometric (uint8 HWC): ``pad``, ``random_crop``, ``random_hflip``, ``train_geometry``.
- tensor (normalised CHW, in place and returned): ``random_erasing`` (torchvision semantics),
  ``channel_random_erasing``, ``channel_exchange``, ``channel_adaptive_gray`` (CAJ, ICCV'21).
- ``train_view(img, rng, augment, kind)``: one training view; ``kind`` is ``"plain"``,
  ``"visible_a"``, ``"visible_b"`` or ``"infrared"`` (the CAJ views, see docs/reference/methods.md#baseline).
- ``eval_image(item, height, width, cache=None) -> uint8 array`` and
  ``load_eval_batch(items, height, width, cache=None) -> Tensor (B, 3, H, W)``: evaluation
  preprocessing (decode, RGB, LANCZOS resize, normalise; no crop, no flip). Items may be Samples,
  paths, PIL images or (H, W, 3) / (H, W) uint8 arrays.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from PIL import Image

from ..core import Sample

if TYPE_CHECKING:
    from ..config import AugmentConfig
from ..utils.seed import numpy_rng
from .cache import ImageCache, decode_resized, resize_lanczos

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CAJ_ERASING_FILL: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
LUMINANCE: tuple[float, float, float] = (0.2989, 0.5870, 0.1140)

# A fixed stream id keeps augmentation draws independent of the sampler's numpy_rng(seed, epoch).
_AUGMENT_STREAM = 0xA06

_MEAN_T = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD_T = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)

EvalItem = Union[Sample, str, "os.PathLike[str]", Image.Image, np.ndarray]


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The augmentation generator of one sample: numpy_rng(seed, AUGMENT_STREAM, epoch, position)."""
    return numpy_rng(seed, _AUGMENT_STREAM, epoch, position)


def to_normalized_tensor(img: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                         std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """(H, W, 3) uint8 -> float32 (3, H, W): (img / 255 - mean) / std (ImageNet's by default)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {img.shape} dtype {img.dtype}")
    if not (img.flags.c_contiguous and img.flags.writeable):  # memmap views are read-only
        img = np.array(img, order="C")
    t = torch.from_numpy(img).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean_t = _MEAN_T if tuple(mean) == IMAGENET_MEAN else torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = _STD_T if tuple(std) == IMAGENET_STD else torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return t.sub_(mean_t).div_(std_t)


# --------------------------------------------------------------------------- geometry (uint8 HWC)


def pad(img: np.ndarray, amount: int, fill: int = 0) -> np.ndarray:
    """Constant-pad `amount` pixels on every side with value `fill` (torchvision Pad, constant mode)."""
    if amount <= 0:
        return img
    return np.pad(img, ((amount, amount), (amount, amount), (0, 0)), mode="constant", constant_values=fill)


def random_crop(img: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A (height, width) window at a uniform offset: top ~ U{0..H-height}, left ~ U{0..W-width}."""
    h, w = img.shape[:2]
    if h < height or w < width:
        raise ValueError(f"cannot crop {height}x{width} from an image of {h}x{w}")
    top = int(rng.integers(0, h - height + 1))
    left = int(rng.integers(0, w - width + 1))
    return img[top:top + height, left:left + width]


def random_hflip(img: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror left-right with probability p (one uniform draw)."""
    return img[:, ::-1] if rng.random() < p else img


def train_geometry(img: np.ndarray, rng: np.random.Generator, augment: AugmentConfig | None) -> np.ndarray:
    """Pad(pad, pad_fill) -> RandomCrop(H, W) -> flip; flip first when augment.resize_first (MPANet order).

    `augment=None` means no augmentation at all (the image is returned as it is)."""
    if augment is None:
        return img
    height, width = img.shape[:2]
    amount, fill = int(augment.pad), int(augment.pad_fill)
    flip, flip_first = bool(augment.flip), bool(augment.resize_first)
    if flip and flip_first:
        img = random_hflip(img, rng)
    img = random_crop(pad(img, amount, fill), height, width, rng)
    if flip and not flip_first:
        img = random_hflip(img, rng)
    return img


# --------------------------------------------------------------------------- tensor ops (normalised CHW)


def random_erasing(
    t: torch.Tensor,
    rng: np.random.Generator,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
) -> torch.Tensor:
    """torchvision RandomErasing: with prob p, fill a box of area U(scale)*H*W, log-uniform aspect, with value."""
    if rng.random() >= p:
        return t
    _, h, w = t.shape
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        area = h * w * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if not (eh < h and ew < w):
            continue
        top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
        t[:, top:top + eh, left:left + ew] = value
        return t
    return t


def channel_random_erasing(
    t: torch.Tensor,
    rng: np.random.Generator,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    min_aspect: float = 0.3,
    fill: Sequence[float] = CAJ_ERASING_FILL,
) -> torch.Tensor:
    """CAJ erasing: with prob p, a box of area U(area)*H*W, aspect U(r, 1/r), channel c filled with fill[c]."""
    if rng.random() > p:  # CAJ erases when u <= p
        return t
    _, h, w = t.shape
    for _ in range(100):
        target = h * w * rng.uniform(area[0], area[1])
        aspect = rng.uniform(min_aspect, 1.0 / min_aspect)
        eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if ew < w and eh < h:
            top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            for c in range(t.shape[0]):
                t[c, top:top + eh, left:left + ew] = float(fill[c])
            return t
    return t


def channel_exchange(t: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Copy one uniformly chosen channel (R, G or B) into all three."""
    c = int(rng.integers(0, 3))
    t[:] = t[c].clone()
    return t


def channel_adaptive_gray(t: torch.Tensor, rng: np.random.Generator, p: float = 0.5) -> torch.Tensor:
    """Prob 3/4: copy a random channel into all three; else with prob p: 0.2989R+0.5870G+0.1140B in all three."""
    idx = int(rng.integers(0, 4))
    if idx < 3:
        t[:] = t[idx].clone()
    elif rng.random() <= p:  # CAJ leaves the image unchanged when u > p
        t[:] = LUMINANCE[0] * t[0] + LUMINANCE[1] * t[1] + LUMINANCE[2] * t[2]
    return t


# --------------------------------------------------------------------------- training views

VIEW_KINDS = ("plain", "visible_a", "visible_b", "infrared")


def train_view(img: np.ndarray, rng: np.random.Generator, augment: AugmentConfig | None,
               kind: str = "plain") -> torch.Tensor:
    """geometry -> normalise -> RandomErasing(augment.random_erasing) -> the CAJ ops of `kind`.

    plain: nothing more. visible_a: channel random erasing. visible_b: channel random erasing then
    channel exchange. infrared: channel random erasing then adaptive gray (p 0.5). The channel
    erasing probability is augment.channel_erasing. `augment=None`: the plain view, unaugmented.
    """
    if kind not in VIEW_KINDS:
        raise ValueError(f"view kind must be one of {VIEW_KINDS}, got {kind!r}")
    if augment is None and kind != "plain":
        raise ValueError(f"the CAJ view {kind!r} needs an AugmentConfig (its channel_erasing), got augment=None")
    t = to_normalized_tensor(train_geometry(img, rng, augment))
    if augment is None:
        return t
    if augment.random_erasing > 0:
        t = random_erasing(t, rng, p=float(augment.random_erasing))
    if kind == "plain":
        return t
    t = channel_random_erasing(t, rng, p=float(augment.channel_erasing))
    if kind == "visible_b":
        t = channel_exchange(t, rng)
    elif kind == "infrared":
        t = channel_adaptive_gray(t, rng)
    return t


# --------------------------------------------------------------------------- evaluation


def eval_image(item: EvalItem, height: int, width: int, cache: ImageCache | None = None) -> np.ndarray:
    """(height, width, 3) uint8 pixels of `item` exactly as evaluation sees them (RGB, LANCZOS resize)."""
    if isinstance(item, np.ndarray):
        arr = item
        if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3))):
            raise ValueError(
                "an image array must be (H, W, 3), (H, W, 1) or (H, W) uint8, "
                f"got shape {arr.shape} dtype {arr.dtype}; "
                "decode files with vireid.data.cache.decode_resized or pass the path instead"
            )
        if arr.ndim == 3 and arr.shape[2] == 3 and arr.shape[:2] == (height, width):
            return arr
        return resize_lanczos(Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[2] == 1 else arr),
                              height, width)
    if isinstance(item, Image.Image):
        return resize_lanczos(item, height, width)
    if isinstance(item, (Sample, str, os.PathLike)):
        if cache is not None and cache.height == height and cache.width == width:
            pos = cache.index_of(item)
            if pos is not None:
                return cache[pos]
        return decode_resized(item.path if isinstance(item, Sample) else item, height, width)
    raise TypeError(
        f"cannot load an image from {type(item).__name__}; pass a Sample, a path, a PIL image or a uint8 array"
    )


def load_eval_batch(
    items: EvalItem | Sequence[EvalItem], height: int, width: int, cache: ImageCache | None = None, *,
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Decode, LANCZOS-resize and normalise `items` with `mean`/`std`: float32 (B, 3, height, width)."""
    if (isinstance(items, (Sample, str, os.PathLike, Image.Image))
            or (isinstance(items, np.ndarray) and items.ndim <= 3)):
        items = [items]
    tensors = [to_normalized_tensor(eval_image(it, height, width, cache), mean, std) for it in items]
    if not tensors:
        return torch.empty((0, 3, height, width), dtype=torch.float32)
    return torch.stack(tensors)
