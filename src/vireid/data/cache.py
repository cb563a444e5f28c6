"""Decoded-image cache: every training image decoded and LANCZOS-resized once into a uint8 memmap.

Public API:

- ``decode_resized(path, height, width) -> np.ndarray``: (height, width, 3) uint8, the image converted
  to RGB (pitfall P19, docs/reference/protocols.md#p19) and resized to ``(width, height)`` with
  ``Image.Resampling.LANCZOS`` (P15, docs/reference/protocols.md#p15).
  This is the single definition of "a dataset image's pixels"; the cache and on-the-fly decoding
  both use it, so they agree bit for bit.
- ``ImageCache.build(samples, height, width, cache_dir, progress=True, num_threads=None)``: returns
  the cache for that exact list of files, building it when missing or stale.
- ``ImageCache.open(npy_path)``: reopen an existing cache file (its JSON sidecar must be next to it).
- ``cache[i] -> np.ndarray`` (H, W, 3) uint8 read-only view; ``len(cache)``; ``cache.index_of(path)``.

Layout of ``cache_dir``: ``vireid-images-{H}x{W}-n{N}-{key}.npy`` (a standard ``.npy`` file, opened
with ``mmap_mode="r"`` so DataLoader workers share the page cache instead of copying) and a sidecar
``.json`` with the key, the shape and the file list. ``key`` hashes every path with its size and
mtime plus (H, W), so a changed, added or removed file gives a new key and a rebuild. The array is
written to a temporary file and renamed, and the sidecar is written (atomically) only afterwards: a
cache whose sidecar is missing or disagrees is never trusted. Concurrent builders (DDP ranks) are
serialised with an advisory lock file where the platform has ``fcntl``. Stale caches of older file
lists are left in place (delete them by hand to reclaim disk space).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..core import DatasetError, Sample
from ..utils.atomic import atomic_path, file_lock, write_json

_load_rgb: Callable[[str | Path], Image.Image] | None
try:  # the project's decoder (DatasetError naming the path); a PIL fallback keeps this module standalone
    from .images import empty_image_message as _empty_message
    from .images import load_rgb as _load_rgb
except ImportError:  # pragma: no cover - only when images.py is absent
    _load_rgb = None

    def _empty_message(path: str | Path) -> str:
        return f"image {path} is empty (0 bytes); re-copy or re-extract it from the original archive"

CACHE_FORMAT_VERSION = 1
_PREFIX = "vireid-images"


def _open_rgb(path: str) -> Image.Image:
    """Fully decode `path` as 3-channel RGB; DatasetError names the file on failure."""
    if _load_rgb is not None:
        return _load_rgb(path)
    try:  # pragma: no cover - exercised only without vireid.data.images
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:  # pragma: no cover
        raise DatasetError(
            f"image {path} cannot be decoded: {exc}; check that the file exists and is a valid image"
        ) from exc


def resize_lanczos(img: Image.Image, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 array of `img` converted to RGB and LANCZOS-resized to (width, height)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img.resize((int(width), int(height)), Image.Resampling.LANCZOS), dtype=np.uint8)


def decode_resized(path: str | os.PathLike[str], height: int, width: int) -> np.ndarray:
    """Decode `path` to RGB and LANCZOS-resize it: (height, width, 3) uint8."""
    return resize_lanczos(_open_rgb(str(path)), height, width)


def _as_path(item: Sample | str | os.PathLike[str]) -> str:
    return item.path if isinstance(item, Sample) else str(item)


def cache_key(paths: Sequence[str], height: int, width: int) -> str:
    """sha256 over (format version, H, W, and every path with its byte size and mtime in ns).

    The stat it needs anyway also finds empty (0-byte) images: DatasetError naming the first one (and
    how many more) before anything is decoded.
    """
    h = hashlib.sha256(f"vireid-image-cache v{CACHE_FORMAT_VERSION} {int(height)}x{int(width)} lanczos\n".encode())
    empty: list[str] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as exc:
            raise DatasetError(
                f"image {p} cannot be read ({exc.strerror or exc}) while fingerprinting the image cache; "
                "check that the dataset root is complete"
            ) from exc
        if st.st_size == 0:
            empty.append(p)
        h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    if empty:
        more = f"; {len(empty) - 1} more images are empty too, `vireid data check` lists them" if len(empty) > 1 else ""
        raise DatasetError(_empty_message(empty[0]) + more)
    return h.hexdigest()


class ImageCache:
    """A read-only (N, H, W, 3) uint8 memmap of decoded, resized images with its file list."""

    def __init__(self, npy_path: str | os.PathLike[str], meta: dict) -> None:
        self.path = Path(npy_path)
        self.meta = meta
        self.height = int(meta["height"])
        self.width = int(meta["width"])
        self.paths: list[str] = list(meta["paths"])
        self._positions = {p: i for i, p in enumerate(self.paths)}
        self._array: np.ndarray | None = None

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        samples: Sequence[Sample | str | os.PathLike[str]],
        height: int,
        width: int,
        cache_dir: str | os.PathLike[str],
        progress: bool = True,
        num_threads: int | None = None,
    ) -> ImageCache:
        """Return the cache of `samples` at (height, width) in `cache_dir`, decoding only if missing or stale."""
        paths = [_as_path(s) for s in samples]
        if not paths:
            raise DatasetError("cannot build an image cache of an empty sample list; the training split has no images")
        if height <= 0 or width <= 0:
            raise DatasetError(f"image cache size must be positive, got height={height} width={width}")
        cache_dir = Path(cache_dir).expanduser()
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = cache_key(paths, height, width)
        stem = f"{_PREFIX}-{int(height)}x{int(width)}-n{len(paths)}-{key[:16]}"
        npy, sidecar = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
        # one builder at a time: concurrent ranks build a cache once
        with file_lock(cache_dir / ".vireid-image-cache.lock"):
            existing = cls._try_open(npy, sidecar, key, len(paths), height, width)
            if existing is not None:
                return existing
            cls._write_array(npy, paths, height, width, progress, num_threads)
            meta = {
                "version": CACHE_FORMAT_VERSION, "key": key, "height": int(height), "width": int(width),
                "count": len(paths), "resample": "lanczos", "dtype": "uint8", "paths": paths,
            }
            write_json(sidecar, meta, indent=0)
        return cls(npy, meta)

    @classmethod
    def open(cls, npy_path: str | os.PathLike[str]) -> ImageCache:
        """Reopen a cache built earlier; DatasetError if the array or its sidecar is missing or inconsistent."""
        npy = Path(npy_path)
        sidecar = npy.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(
                f"image cache sidecar {sidecar} cannot be read ({exc}); the cache is incomplete, "
                "delete it and rebuild with ImageCache.build"
            ) from exc
        cache = cls._try_open(npy, sidecar, meta.get("key", ""), int(meta.get("count", -1)),
                              int(meta.get("height", -1)), int(meta.get("width", -1)))
        if cache is None:
            raise DatasetError(
                f"image cache {npy} does not match its sidecar {sidecar} (shape or version differ); "
                "delete both files and rebuild with ImageCache.build"
            )
        return cache

    @classmethod
    def _try_open(cls, npy: Path, sidecar: Path, key: str, count: int, height: int, width: int) -> ImageCache | None:
        if not (npy.is_file() and sidecar.is_file()):
            return None
        try:
            meta = json.loads(sidecar.read_text())
            arr = np.load(npy, mmap_mode="r")
        except (OSError, ValueError):
            return None
        expected = (count, int(height), int(width), 3)
        if (meta.get("version") != CACHE_FORMAT_VERSION or meta.get("key") != key
                or tuple(arr.shape) != expected or arr.dtype != np.uint8 or len(meta.get("paths", ())) != count):
            return None
        cache = cls(npy, meta)
        cache._array = arr
        return cache

    @staticmethod
    def _write_array(npy: Path, paths: list[str], height: int, width: int, progress: bool,
                     num_threads: int | None) -> None:
        from tqdm.auto import tqdm

        threads = num_threads if num_threads is not None else min(4, os.cpu_count() or 1)
        chunk = 256  # bounds the decoded images held in memory at once
        with atomic_path(npy, suffix=".npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), height, width, 3))
            try:
                with tqdm(total=len(paths), desc=f"caching images {height}x{width}", unit="img",
                          disable=not progress) as bar:
                    if threads <= 1:
                        for i, p in enumerate(paths):
                            out[i] = decode_resized(p, height, width)
                            bar.update(1)
                    else:
                        # PIL releases the GIL while decoding and resizing, so threads scale.
                        with ThreadPoolExecutor(max_workers=threads) as pool:
                            for start in range(0, len(paths), chunk):
                                part = paths[start:start + chunk]
                                for j, img in enumerate(pool.map(decode_resized, part,
                                                                 [height] * len(part), [width] * len(part))):
                                    out[start + j] = img
                                    bar.update(1)
                out.flush()
            finally:
                del out

    # -- access -------------------------------------------------------------------------------

    @property
    def array(self) -> np.ndarray:
        """The read-only (N, H, W, 3) uint8 memmap (opened lazily, e.g. after pickling into a worker)."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        """Image i as a read-only (H, W, 3) uint8 view."""
        return self.array[int(i)]

    def index_of(self, path: Sample | str | os.PathLike[str]) -> int | None:
        """Position of `path` (or a Sample's path) in the cache, None if it is not cached."""
        return self._positions.get(_as_path(path))

    def __getstate__(self) -> dict:
        # Never pickle the mapped pixels (that would copy gigabytes into every worker); reopen lazily.
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def __repr__(self) -> str:
        return f"ImageCache({str(self.path)!r}, n={len(self)}, size={self.height}x{self.width})"
