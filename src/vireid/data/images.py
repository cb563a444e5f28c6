"""Image files: which extensions count as images, and decoding any of them to 3-channel RGB."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..core import DatasetError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")


def is_image_file(path: str | Path) -> bool:
    """True when the file name ends in one of IMAGE_EXTENSIONS (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def empty_image_message(path: str | Path) -> str:
    """The one-line error of a zero-byte image (the decoders, the image cache and `vireid data check` share it)."""
    return f"image {path} is empty (0 bytes); re-copy or re-extract it from the original archive"


def unreadable_image_message(path: str | Path, exc: OSError) -> str:
    """The one-line error of an image whose size cannot be read (missing file, dangling symlink, loop)."""
    return f"image {path} cannot be read ({exc.strerror or exc}); check that the file exists"


def image_size_problem(path: str | Path) -> str | None:
    """A one-line problem when `path` cannot be stat'ed or is empty (0 bytes); None otherwise. No decoding."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return unreadable_image_message(path, exc)
    return empty_image_message(path) if size == 0 else None


def check_image_sizes(paths: Iterable[str | Path]) -> None:
    """DatasetError naming the first empty or unreadable image of `paths` (and how many more); one stat each."""
    problems = [line for line in map(image_size_problem, paths) if line]
    if problems:
        more = len(problems) - 1
        raise DatasetError(problems[0] + (f"; {more} more images are empty or unreadable too, "
                                          "`vireid data check` lists them" if more else ""))


def load_rgb(path: str | Path) -> Image.Image:
    """Fully decode `path` and return it as a 3-channel RGB image; DatasetError names unreadable files."""
    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DatasetError(unreadable_image_message(path, exc)) from exc
    if size == 0:
        raise DatasetError(empty_image_message(path))
    try:
        with Image.open(path) as img:
            # load() forces the whole file to decode, so truncated JPEGs fail here rather than
            # silently yielding a grey bottom half (LOAD_TRUNCATED_IMAGES is deliberately left off).
            img.load()
            return to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"image {path} ({size} bytes) cannot be decoded: {exc}; the file is truncated or not an image, "
            "re-copy or re-extract it from the original archive"
        ) from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; 16-bit and float thermal frames are scaled, not clipped, to 8 bits."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 257.0  # 0..65535 -> 0..255
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        grey = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    if img.mode in ("P", "PA", "LA", "RGBA") or "A" in img.getbands():
        # Composite transparency on black so padded crops look like the rest of the data.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
