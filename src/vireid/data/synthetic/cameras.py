"""Cameras of SynthVI: which modality and place each one sees, its illumination, noise and backgrounds.

Every camera-level constant is drawn from (seed, layout, camera), never from the order work is done
in, so any worker renders the same pixels. Cameras at the same location (SYSU cam2 and cam3, LLCM
visible and near-infrared camera k) share one background layout, rendered in each modality's own
materials.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...core import Modality

STREAM_CAMERA = 31
STREAM_BACKGROUND = 32
LAYOUT_CODES = {"sysu": 1, "regdb": 2, "llcm": 3}
VIEWS_ALL = ("front", "back", "left", "right")
VIEWS_FRONT_BACK = ("front", "back")


@dataclass(frozen=True)
class CameraSpec:
    """A camera of a layout: number, modality, physical location and the kind of sensor."""

    layout: str
    cam: int
    modality: Modality
    location: int
    outdoor: bool
    style: str  # "visible" | "nir" | "thermal"
    views: tuple[str, ...] = VIEWS_ALL
    fmt: str = "jpg"  # "jpg" | "bmp"
    channels: int = 3  # channels written to disk (1 only for RegDB thermal BMPs)

    @property
    def key(self) -> int:
        """A number unique within the layout, used in random streams."""
        return self.cam * 2 + self.modality.code


@dataclass(frozen=True)
class CameraParams:
    """Camera-level rendering constants (all scaled by difficulty)."""

    gains: np.ndarray  # (3,) colour cast of a visible camera; ones for infrared
    brightness: float
    contrast: float
    noise: float  # sensor noise sigma, intensities in [0, 1]
    blur: float  # probability of a blur pass on top of the sensor's own
    base_blur: int  # blur passes every image gets (infrared optics are softer)
    jpeg_quality: int


def sysu_cameras() -> list[CameraSpec]:
    """SYSU-MM01: RGB 1, 2 (indoor), 4, 5 (outdoor); IR 3 (indoor, room of cam2) and 6 (outdoor)."""
    V, IR = Modality.VISIBLE, Modality.INFRARED
    return [
        CameraSpec("sysu", 1, V, 1, False, "visible"),
        CameraSpec("sysu", 2, V, 2, False, "visible"),
        CameraSpec("sysu", 3, IR, 2, False, "nir"),
        CameraSpec("sysu", 4, V, 4, True, "visible"),
        CameraSpec("sysu", 5, V, 5, True, "visible"),
        CameraSpec("sysu", 6, IR, 6, True, "nir"),
    ]


def regdb_cameras() -> list[CameraSpec]:
    """RegDB: one aligned visible/thermal pair at one place; people seen from the front or back."""
    return [
        CameraSpec("regdb", 1, Modality.VISIBLE, 1, True, "visible", VIEWS_FRONT_BACK, "bmp", 3),
        CameraSpec("regdb", 1, Modality.INFRARED, 1, True, "thermal", VIEWS_FRONT_BACK, "bmp", 1),
    ]


LLCM_VIS_CAMS = tuple(range(1, 10))
LLCM_NIR_CAMS = (1, 2, 4, 5, 6, 7, 8, 9)  # the real test_nir has no cam3


def llcm_cameras() -> list[CameraSpec]:
    """LLCM: nine places, each filmed in visible light by day and near-infrared by night."""
    cams = [CameraSpec("llcm", c, Modality.VISIBLE, c, c > 4, "visible") for c in LLCM_VIS_CAMS]
    cams += [CameraSpec("llcm", c, Modality.INFRARED, c, c > 4, "nir") for c in LLCM_NIR_CAMS]
    return cams


def camera_params(spec: CameraSpec, seed: int, difficulty: float) -> CameraParams:
    """Illumination, noise, blur and JPEG quality of one camera, from (seed, layout, camera)."""
    d = float(difficulty)
    rng = np.random.default_rng(
        np.random.SeedSequence([int(seed), STREAM_CAMERA, LAYOUT_CODES[spec.layout], spec.key])
    )
    s = 0.5 + d  # strength of camera-to-camera differences
    quality = int(np.clip(round(94 - rng.uniform(0.0, 16.0) * s), 60, 95))
    if spec.modality is Modality.VISIBLE:
        gains = np.clip(1.0 + rng.normal(0.0, 0.07 * s, 3), 0.75, 1.25).astype(np.float32)
        brightness = float(np.exp(rng.normal(0.1 if spec.outdoor else -0.05, 0.12 * s)))
        contrast = float(np.clip(1.0 + rng.normal(0.0, 0.1 * s), 0.75, 1.25))
        noise = (0.004 + 0.016 * d) * float(rng.uniform(1.0, 1.5))
        return CameraParams(gains, brightness, contrast, noise, 0.15 + 0.3 * d, 0, quality)
    contrast = float(rng.uniform(0.72, 0.9) if spec.style == "nir" else rng.uniform(0.78, 0.92))
    brightness = float(np.exp(rng.normal(0.0, 0.08 * s)))
    noise = (0.01 + 0.025 * d) * float(rng.uniform(1.0, 1.4))
    base_blur = 1 if spec.style == "thermal" else 0  # thermal optics are the softest
    return CameraParams(np.ones(3, np.float32), brightness, contrast, noise, 0.3 + 0.4 * d, base_blur, quality)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise: a coarse random grid bilinearly upsampled to (h, w), values in [-1, 1]."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
    gy = np.linspace(0, cells, h, dtype=np.float32)
    gx = np.linspace(0, cells, w, dtype=np.float32)
    y0 = np.minimum(gy.astype(int), cells - 1)
    x0 = np.minimum(gx.astype(int), cells - 1)
    fy, fx = (gy - y0)[:, None], (gx - x0)[None, :]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, e = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + e * fx) * fy


@lru_cache(maxsize=64)
def _background_layout(seed: int, layout: str, location: int, outdoor: bool, h: int, w: int):
    """A location's material map (h, w) of small ints, a shading map, and its material count."""
    rng = np.random.default_rng(
        np.random.SeedSequence([int(seed), STREAM_BACKGROUND, LAYOUT_CODES[layout], int(location)])
    )
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32) / h, np.arange(w, dtype=np.float32) / w, indexing="ij")
    horizon = rng.uniform(0.45, 0.72)
    mat = np.where(yy < horizon, 0, 1)  # wall / ground
    n_mat = 8
    if outdoor:
        for _ in range(int(rng.integers(4, 8))):  # trees, cars, bins: blobs and boxes
            cy, cx = rng.uniform(0.1, 0.9), rng.uniform(0.0, 1.0)
            ry, rx = rng.uniform(0.05, 0.25), rng.uniform(0.04, 0.18)
            m = int(rng.integers(2, n_mat))
            if rng.random() < 0.5:
                mat[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = m
            else:
                mat[(np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)] = m
        tiles = (np.floor(xx * rng.uniform(6, 14)) + np.floor(yy * rng.uniform(8, 16))) % 2 == 1
        mat[(yy >= horizon) & tiles] = 7
    else:
        for _ in range(int(rng.integers(2, 5))):  # doors, pillars, posters on the wall
            x0, bw = rng.uniform(0.0, 0.95), rng.uniform(0.05, 0.2)
            top = rng.uniform(0.0, 0.3)
            mat[(xx >= x0) & (xx < x0 + bw) & (yy >= top) & (yy < horizon)] = int(rng.integers(2, 6))
        mat[(yy >= horizon) & (yy < horizon + 0.03)] = 6  # skirting board
    shading = 0.12 * _smooth_noise(rng, h, w, 3) + 0.05 * _smooth_noise(rng, h, w, 12)
    vis = rng.uniform(0.15, 0.8, size=(n_mat, 1)) * rng.uniform(0.7, 1.3, size=(n_mat, 3))
    nir = rng.uniform(0.1, 0.5, size=n_mat)  # independent of the visible colours; lamp-lit people stand out
    thermal = rng.uniform(0.08, 0.4, size=n_mat)  # the scene is colder than people
    # Floor tiles are a shade of the ground, not a new material: texture without strong clutter.
    vis[7], nir[7], thermal[7] = vis[1] * 0.85, nir[1] * 0.85, thermal[1] * 0.85
    return mat, shading.astype(np.float32), {
        "visible": np.clip(vis, 0, 1).astype(np.float32),
        "nir": nir.astype(np.float32),
        "thermal": thermal.astype(np.float32),
    }


@lru_cache(maxsize=64)
def background(seed: int, spec: CameraSpec, h: int, w: int) -> np.ndarray:
    """The camera's background plate, (3, h, w) visible or (h, w) infrared, float32 in [0, 1]."""
    mat, shading, colours = _background_layout(seed, spec.layout, spec.location, spec.outdoor, h, w)
    table = colours[spec.style]
    if spec.style == "visible":  # channel-first, like the renderer's working image
        img = table.T[:, mat] * (1.0 + shading)
    else:
        img = table[mat] * (1.0 + 0.7 * shading)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    img.setflags(write=False)
    return img
